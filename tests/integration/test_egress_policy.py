"""Acceptance: with the egress policy set to loopback and the REAL built-in catalogue, `check`
sends nothing, blames nothing on Meta, says the vantage is offline and exits 2.

The proof is a Python audit hook in the exporter process recording every socket connect/send
and every libc lookup. As root, the process also runs in a fresh, empty network namespace
(`unshare --net`), so even a bug could not reach the real Meta from a test run. libcurl
connects and sends from C, out of the hook's sight: as root, a second proof counts packets
in the kernel (test_check_sends_no_packet_the_kernel_can_count).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import netns

HERE = Path(__file__).resolve().parent
# The egress policy of every `check` here: loopback, v4 and v6, nothing else.
LOOPBACK_ONLY = ("--egress.allow-network", "127.0.0.0/8", "--egress.allow-network", "::1/128")


def is_loopback(destination: str) -> bool:
    match = re.match(r"\('([^']+)'", destination)
    if not match:
        return False
    try:
        return ipaddress.ip_address(match.group(1).split("%")[0]).is_loopback
    except ValueError:
        return False


def run_audited(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, list[str]]]:
    report = tmp_path / "audit.json"
    command = [sys.executable, str(HERE / "audited_cli.py"), str(report), *args]
    if os.geteuid() == 0 and shutil.which("unshare"):
        command = ["unshare", "--net", *command]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=HERE.parents[1]
    )
    return completed, json.loads(report.read_text())


def test_check_with_loopback_policy_and_real_catalogue_sends_nothing(tmp_path: Path) -> None:
    completed, audit = run_audited(
        tmp_path,
        "check",
        "--json",
        *LOOPBACK_ONLY,
    )
    assert completed.returncode == 2, completed.stderr
    assert audit["connects"] == [], "sockets were opened"
    assert audit["lookups"] == [], "the libc resolver was used"
    document = json.loads(completed.stdout)
    assert document["vantage"]["up"] is False
    assert "blocked by the egress policy" in document["vantage"]["detail"]
    reasons = {c["last_result"]["reason"] for s in document["services"] for c in s["checks"]}
    assert reasons == {"blocked_by_policy"}
    meta = [s for s in document["services"] if not s["control"]]
    assert len(meta) >= 9
    assert {s["status"] for s in meta} == {"unknown"}, (
        "a blocked vantage must never say Meta is down"
    )


def test_check_table_says_it_is_us(tmp_path: Path) -> None:
    completed, audit = run_audited(tmp_path, "check", "--egress.allow-network", "127.0.0.0/8")
    assert completed.returncode == 2
    assert not [c for c in audit["connects"] if not is_loopback(c)]
    assert "The problem is on your side" in completed.stdout
    assert "This network: offline - every control check is blocked" in completed.stdout
    assert " down " not in completed.stdout


# The kernel's count, for what the audit hook cannot see: libcurl opens its sockets from
# Python (OPENSOCKETFUNCTION, audited) but connects and sends from C. In a namespace of its
# own with an uplink and default routes, a packet to anywhere but loopback would leave by
# that link, counted by nft on its way out, and vanish: the link's other end is in the same
# namespace, up, with no address (a veth pair: these kernels have no dummy links). TCP and
# UDP only: the kernel's own IPv6 neighbour discovery on the new link is not the exporter's.
EGRESS_COUNTER = """
table inet moe_egress {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    meta l4proto { tcp, udp } counter name leaving
  }
  counter leaving {}
}
"""


def _leaving_packets(ns: str) -> int:
    listing = netns.in_ns(ns, "nft", "list", "counter", "inet", "moe_egress", "leaving").stdout
    match = re.search(r"packets (\d+)", listing)
    assert match, listing
    return int(match.group(1))


@pytest.fixture
def counted_namespace() -> Iterator[str]:
    why = netns.require_root()
    if why is not None:
        pytest.skip(why)
    ns = f"moe-egress-{os.getpid()}"
    netns.add_namespace(ns)
    try:
        netns.in_ns(ns, "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "sink0")
        netns.in_ns(ns, "ip", "addr", "add", "10.251.0.2/24", "dev", "uplink0")
        for device in ("uplink0", "sink0"):
            netns.in_ns(ns, "ip", "link", "set", device, "up")
        netns.in_ns(ns, "ip", "route", "add", "default", "via", "10.251.0.1", "dev", "uplink0")
        netns.in_ns(ns, "ip", "-6", "addr", "add", "fd00:251::2/64", "dev", "uplink0", "nodad")
        netns.in_ns(ns, "ip", "-6", "route", "add", "default", "via", "fd00:251::1")
        netns.nft(ns, EGRESS_COUNTER)
        yield ns
    finally:
        netns.kill_ns_processes(ns)
        netns.delete_namespace(ns)


DATAGRAM = "import socket; socket.socket(2, 2).sendto(b'x', ('10.251.0.9', 9))"
LIBCURL_CONNECT = (
    "import pycurl; c = pycurl.Curl(); c.setopt(pycurl.URL, 'https://10.251.0.9/');"
    " c.setopt(pycurl.CONNECTTIMEOUT_MS, 300); c.perform()"
)


@pytest.mark.root
def test_check_sends_no_packet_the_kernel_can_count(counted_namespace: str) -> None:
    """`check` with the real catalogue (HTTP on libcurl included) and a loopback policy: not
    one packet leaves the namespace. The counter is shown to count first, inside this
    namespace's own 10.251.0.0/24: a UDP datagram from Python, then libcurl's connect (its
    SYNs, sent from C)."""
    ns = counted_namespace
    for sender, least in ((DATAGRAM, 1), (LIBCURL_CONNECT, 2)):
        netns.in_ns(ns, sys.executable, "-c", sender, check=False)
        assert _leaving_packets(ns) >= least, f"the counter missed: {sender}"
    netns.in_ns(ns, "nft", "reset", "counter", "inet", "moe_egress", "leaving")
    completed = netns.in_ns(
        ns,
        sys.executable,
        "-m",
        "exporter",
        "check",
        "--json",
        *LOOPBACK_ONLY,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    document = json.loads(completed.stdout)
    assert {c["last_result"]["reason"] for s in document["services"] for c in s["checks"]} == {
        "blocked_by_policy"
    }
    assert _leaving_packets(ns) == 0, "packets left the namespace"
