"""The image, built and run by a real container engine: podman (Debian's, with runc).

No registry is reachable here, so the Dockerfile's base is stood in for by a local bootstrap
of the same Debian release with its own Python 3.11 (scripts/container-base.sh), passed as
the BASE build argument; everything else is this Dockerfile as users build it. The build
stage fetches the dependencies from PyPI as it would anywhere: the build sees the host's
network and pip settings (its package index and CA bundle), which are this machine's way to
reach PyPI, and are mounted for the RUN steps only (nothing of them lands in a layer).

Then the image runs as users run it hardened: its own non-root user, a read-only root
filesystem, every capability dropped, no new privileges, and no network but its own
loopback (`--network none`; the egress policy is fenced to loopback as well, so not even a
DNS query leaves). Inside: /metrics and /-/ready serve, the HEALTHCHECK passes, the process
runs as 65532 with no capability. podman keeps the layers, so a second build (CI's later
runs) reuses them; test-artifacts/image.json gets the timings and the image's size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .tools import ROOT

BASE = "localhost/mox-base:python3.11-bookworm"
IMAGE = "localhost/meta-outage-exporter:test"
ARTIFACT = ROOT / "test-artifacts" / "image.json"
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")  # this machine's quirks
# How this machine's pip reaches PyPI (index settings, TLS bundle): given to the build's RUN
# steps as read-only volumes, where they exist.
PIP_SETTINGS = ["/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt", "/opt/wheels"]
BUILD_TIMEOUT = 1200.0
READY_TIMEOUT = 90.0

pytestmark = pytest.mark.root


def podman(
    *args: str, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Any]]:
    """The image, built from this Dockerfile on the local base; its `podman image inspect`."""
    if os.geteuid() != 0:
        pytest.skip("podman builds and runs images as root here")
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} missing: scripts/install-system-deps.sh installs it", pytrace=False
            )
    timings: dict[str, float] = {}
    started = time.monotonic()
    subprocess.run(
        [ROOT / "scripts" / "container-base.sh", BASE], check=True, timeout=BUILD_TIMEOUT
    )
    timings["base_seconds"] = round(time.monotonic() - started, 1)
    volumes = [f"--volume={path}:{path}:ro" for path in PIP_SETTINGS if Path(path).exists()]
    started = time.monotonic()
    podman(
        "build",
        "--format=docker",  # keeps HEALTHCHECK (the OCI format has none)
        "--network=host",
        *volumes,
        f"--build-arg=BASE={BASE}",
        f"--tag={IMAGE}",
        str(ROOT),
        timeout=BUILD_TIMEOUT,
    )
    timings["build_seconds"] = round(time.monotonic() - started, 1)
    (inspected,) = json.loads(podman("image", "inspect", IMAGE).stdout)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(
        json.dumps({**timings, "size_bytes": inspected["Size"], "base": BASE}, indent=2) + "\n"
    )
    yield inspected


def test_the_image_says_how_it_runs(image: dict[str, Any]) -> None:
    config = image["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["meta-outage-exporter"] and config["Cmd"] == ["run"]
    assert "10094/tcp" in config["ExposedPorts"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "meta-outage-exporter"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # podman reports the Docker-format HEALTHCHECK beside the OCI config
    assert image["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    assert image["Healthcheck"]["Retries"] == 3
    assert not config.get("Volumes"), "the build's volumes must not become the image's"


@pytest.fixture
def container(image: dict[str, Any]) -> Iterator[str]:
    name = f"mox-image-test-{os.getpid()}"
    podman("rm", "--force", "--ignore", name)
    podman(
        "run",
        "--detach",
        f"--name={name}",
        "--network=none",
        "--read-only",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        IMAGE,
        "run",
        "--egress.allow-network=127.0.0.0/8",
        "--dns.resolver=127.0.0.1:53",  # nothing listens: refused at once, on loopback
    )
    try:
        yield name
    finally:
        podman("rm", "--force", "--time=10", name, timeout=60, check=False)


def in_container(name: str, code: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", name, "python", "-c", code, check=False)


def fetch(name: str, path: str) -> subprocess.CompletedProcess[str]:
    return in_container(
        name,
        "import sys, urllib.request\n"
        f"with urllib.request.urlopen('http://127.0.0.1:10094{path}', timeout=5) as r:\n"
        "    sys.stdout.write(r.read().decode())",
    )


def test_it_serves_read_only_as_its_user_without_capabilities(container: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while (ready := fetch(container, "/-/ready")).returncode != 0:
        if time.monotonic() > deadline:
            logs = podman("logs", container, check=False)
            pytest.fail(f"not ready in {READY_TIMEOUT:.0f}s: {ready.stderr}\n{logs.stderr[-2000:]}")
        time.sleep(1)
    metrics = fetch(container, "/metrics")
    assert metrics.returncode == 0 and "\nmeta_exporter_ready 1.0\n" in metrics.stdout
    assert podman("healthcheck", "run", container, check=False).returncode == 0
    status = in_container(container, "print(open('/proc/1/status').read())").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == "65532" and fields["Gid"].split()[0] == "65532"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    written = in_container(container, "open('/etc/meta-outage-exporter/x', 'w')")
    assert written.returncode != 0 and "Read-only file system" in written.stderr
