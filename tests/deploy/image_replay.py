"""Replay a Dockerfile's build on this machine, without a container engine.

Each stage's base image (python:3.11-slim) is stood in for by a fresh virtualenv of this
machine's Python 3.11: its `python` and `pip` come first on PATH, as /usr/local/bin's do in
the image. Container paths are mapped into a per-stage directory (`<root>/stageN/fs`): only
the paths in CONTAINER_PATHS, and the replay refuses a Dockerfile that uses any other, so a
new path cannot be silently taken from the host. WORKDIR sets the cwd, ENV the environment,
COPY copies from the build context (skipping what .dockerignore drops: caches), and
`RUN --mount=type=bind,from=STAGE` links the other stage's mapped path in for that one RUN.
RUN commands then run unchanged apart from the path mapping, with /bin/sh -c as Docker does.

What this does not reproduce: the base image's own files (Debian bookworm's libc and
OpenSSL, pip's version), file ownership inside the image, and USER (the caller runs the
entrypoint as that user when it can). The host's PIP_* and proxy variables are passed through:
they are how this machine reaches PyPI, as the build host's network is for `docker build`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy import dockerfile

CONTAINER_PATHS = ("/etc/meta-outage-exporter", "/wheels", "/src")
_PATH = re.compile(
    r"(?<![\w./-])(" + "|".join(re.escape(p) for p in CONTAINER_PATHS) + r")(?=[/\s'\"]|$)"
)
_HOST_ENV = re.compile(r"^(PIP_\w+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_\w+)$")
# A Dockerfile-level absolute path: any /word at a token start (URLs and options excluded).
_ABSOLUTE = re.compile(r"(?<![\w.:/-])/[\w.-]+(?:/[\w.*-]+)*")


class ReplayError(RuntimeError):
    pass


@dataclasses.dataclass
class Image:
    """The final stage as replayed: how to run its entrypoint and healthcheck."""

    root: Path
    python: Path  # the final stage's base Python ("the image's python")
    env: dict[str, str]
    workdir: Path
    user: str | None
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    exposed: list[str]

    def resolve(self, argv: list[str]) -> list[str]:
        """argv[0] looked up on the image's PATH, as the runtime does for exec form."""
        found = shutil.which(argv[0], path=self.env["PATH"])
        if found is None:
            raise ReplayError(f"{argv[0]!r} not found on the image's PATH {self.env['PATH']}")
        return [found, *argv[1:]]


def map_paths(text: str, fs: Path) -> str:
    return _PATH.sub(lambda m: f"{fs}{m.group(1)}", text)


def unknown_paths(text: str) -> list[str]:
    """Absolute paths in a Dockerfile argument that the replay does not map."""
    return [
        p
        for p in _ABSOLUTE.findall(text)
        if not any(p == c or p.startswith(c + "/") for c in CONTAINER_PATHS)
    ]


def _in_fs(fs: Path, workdir: Path, path: str) -> Path:
    return fs / path.lstrip("/") if path.startswith("/") else workdir / path


def _run(argv: list[str], **kwargs: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise ReplayError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


def replay(path: Path, context: Path, root: Path, timeout: float = 900) -> Image:
    stages = dockerfile.load(path)
    host_env = {k: v for k, v in os.environ.items() if _HOST_ENV.match(k)}
    fs_of: dict[str, Path] = {}
    image: Image | None = None
    for index, stage in enumerate(stages):
        base = root / f"stage{index}" / "python"
        fs = root / f"stage{index}" / "fs"
        fs.mkdir(parents=True)
        _run([sys.executable, "-m", "venv", str(base)], timeout=timeout)
        env = {
            **host_env,
            "PATH": f"{base}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(root / "home"),
            "LANG": "C.UTF-8",
        }
        workdir = fs
        image = Image(root, base / "bin" / "python", env, fs, None, [], [], [], [])
        for instruction in stage.instructions:
            keyword, args = instruction.keyword, instruction.args
            if keyword in ("RUN", "WORKDIR", "COPY") and unknown_paths(args):
                raise ReplayError(
                    f"line {instruction.line}: paths {unknown_paths(args)} are not mapped "
                    f"by the replay (known: {CONTAINER_PATHS})"
                )
            if keyword == "ENV":
                for key, value in dockerfile.key_values(args).items():
                    env[key] = map_paths(dockerfile.expand(value, env), fs)
            elif keyword == "WORKDIR":
                workdir = _in_fs(fs, workdir, args)
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                *sources, dest = args.split()
                if any(s.startswith("--") for s in sources):
                    raise ReplayError(f"line {instruction.line}: COPY flags are not replayed")
                target = _in_fs(fs, workdir, dest)
                for source in sources:
                    src = context / source
                    if src.is_dir():
                        shutil.copytree(
                            src,
                            target,
                            dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        )
                    else:
                        target.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, target / src.name)
            elif keyword == "RUN":
                _replay_run(instruction, fs, workdir, env, fs_of, timeout)
            elif keyword == "USER":
                image.user = args
            elif keyword == "EXPOSE":
                image.exposed += args.split()
            elif keyword == "ENTRYPOINT":
                image.entrypoint = dockerfile.exec_form(args)
            elif keyword == "CMD":
                image.cmd = dockerfile.exec_form(args)
            elif keyword == "HEALTHCHECK":
                image.healthcheck = dockerfile.healthcheck(args)[1]
            elif keyword != "LABEL":
                raise ReplayError(f"line {instruction.line}: {keyword} is not replayed")
        image.env, image.workdir = env, workdir
        fs_of[str(index)] = fs
        if stage.name:
            fs_of[stage.name] = fs
    if image is None:
        raise ReplayError("no FROM in the Dockerfile")
    return image


def _replay_run(
    instruction: dockerfile.Instruction,
    fs: Path,
    workdir: Path,
    env: dict[str, str],
    fs_of: dict[str, Path],
    timeout: float,
) -> None:
    mounts, command = dockerfile.split_run(instruction.args)
    links: list[Path] = []
    try:
        for mount in mounts:
            if mount.kind != "bind" or mount.from_stage not in fs_of:
                raise ReplayError(f"line {instruction.line}: mount {mount} is not replayed")
            source = fs_of[mount.from_stage] / mount.source.lstrip("/")
            if not source.exists():
                raise ReplayError(f"line {instruction.line}: mount source {source} missing")
            link = fs / mount.target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
            links.append(link)
        done = subprocess.run(
            ["/bin/sh", "-c", map_paths(command, fs)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ReplayError(
                f"line {instruction.line}: RUN exited {done.returncode}\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    finally:
        for link in links:  # bind mounts are not part of the layer
            link.unlink()
