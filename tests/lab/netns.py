"""Thin, logged wrappers over iproute2 and nft for the lab: namespaces, links, routes, rules.

Every object is named by the lab (a per-run prefix), so teardown removes exactly what this
run created and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


class LabError(RuntimeError):
    pass


def require_root() -> str | None:
    """None when the lab can run here, else why not (the tests skip with this message)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veth links, nftables); run as root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"the lab needs `{tool}` (Debian packages iproute2 and nftables)"
    return None


def sh(
    *argv: str, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    log.debug("+ %s", " ".join(argv))
    done = subprocess.run(
        argv, capture_output=True, text=True, input=input_text, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def namespaces() -> list[str]:
    listing = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def add_namespace(ns: str) -> None:
    sh("ip", "netns", "add", ns)
    in_ns(ns, "ip", "link", "set", "lo", "up")


def ns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_ns_processes(ns: str, grace: float = 3.0) -> None:
    """SIGTERM every process inside our namespace, SIGKILL what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and ns_pids(ns):
            time.sleep(0.05)


def delete_namespace(ns: str) -> None:
    if ns in namespaces():
        kill_ns_processes(ns)
        sh("ip", "netns", "delete", ns, check=False)


def veth(ns_a: str, name_a: str, ns_b: str | None, name_b: str) -> None:
    """A veth pair between two namespaces (ns_b None: the host's own namespace)."""
    sh(
        "ip",
        "link",
        "add",
        name_a,
        "netns",
        ns_a,
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        *(("netns", ns_b) if ns_b else ()),
    )
    in_ns(ns_a, "ip", "link", "set", name_a, "up")
    if ns_b:
        in_ns(ns_b, "ip", "link", "set", name_b, "up")
    else:
        sh("ip", "link", "set", name_b, "up")


def address(ns: str | None, device: str, cidr: str) -> None:
    argv = ("ip", "addr", "add", cidr, "dev", device)
    in_ns(ns, *argv) if ns else sh(*argv)


def service_addresses(ns: str, cidrs: Sequence[str]) -> None:
    """Addresses a namespace serves from, on its loopback (this kernel has no dummy links)."""
    for cidr in cidrs:
        in_ns(ns, "ip", "addr", "add", cidr, "dev", "lo")


def route(ns: str, *spec: str, action: str = "replace") -> None:
    in_ns(ns, "ip", "route", action, *spec)


def delete_route(ns: str, prefix: str) -> None:
    in_ns(ns, "ip", "route", "del", prefix, check=False)


def sysctl(ns: str, key: str, value: str) -> None:
    """Through /proc, so the lab does not need the procps package."""
    path = "/proc/sys/" + key.replace(".", "/")
    in_ns(ns, "sh", "-c", f"echo {value} > {path}")


def nft(ns: str, script: str) -> None:
    """Apply an nft script inside a namespace (atomically, as nft -f does)."""
    done = sh("ip", "netns", "exec", ns, "nft", "-f", "-", input_text=script, check=False)
    if done.returncode != 0:
        raise LabError(f"nft in {ns} failed: {done.stderr.strip()}\n{script}")


def link_state(ns: str, device: str, up: bool) -> None:
    in_ns(ns, "ip", "link", "set", device, "up" if up else "down")
