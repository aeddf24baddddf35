"""`check --watch` as a user sees it: on a real pseudo-terminal (redrawn in place, coloured,
Ctrl-C ends it), through a pipe (appended rounds, no escape codes), and --json lines; all
against the loopback fake Meta."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import termios
import threading
from pathlib import Path

import pytest

from exporter.cli import checkview
from exporter.sim.frontend import Fault, FrontendServer
from tests.integration.test_cli import CLI, run_cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PtyOutput:
    """Collects what a child writes to its terminal, in a thread (the loop keeps serving)."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.data = b""
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self.master, 65536):
                self.data += chunk
        except OSError:  # EIO: every writer of the terminal has closed it
            pass
        self.closed.set()

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    async def wait_for(self, predicate: object, timeout: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.text):  # type: ignore[operator]
            assert asyncio.get_running_loop().time() < deadline, f"not seen in time:\n{self.text}"
            await asyncio.sleep(0.05)


async def start_in_pty(
    *args: str, environ: dict[str, str]
) -> tuple[asyncio.subprocess.Process, PtyOutput]:
    master, slave = pty.openpty()
    # A 120x40 terminal, as a user's would be; the table fits its width.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=slave,
        stdout=slave,
        stderr=asyncio.subprocess.DEVNULL,
        env=environ,
    )
    os.close(slave)
    return process, PtyOutput(master)


def terminal_env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    return {**environ, "TERM": "xterm-256color", **extra}


async def test_watch_on_a_terminal_redraws_in_place_in_colour_until_ctrl_c(
    config_file: Path, frontend: FrontendServer
) -> None:
    process, out = await start_in_pty(
        "check", "--config.file", str(config_file), "--watch", "0.5", environ=terminal_env()
    )
    try:
        await out.wait_for(lambda text: "All Meta services are up" in text)
        assert out.text.startswith(checkview.CLEAR_SCREEN + checkview.HOME)
        assert "\x1b[32mup" in out.text  # green status words on a terminal
        frontend.state.set_fault(Fault(host="www.facebook.com", status=503))
        frontend.state.set_fault(Fault(host="graph.facebook.com", status=502))
        await out.wait_for(lambda text: "Facebook is down at HTTP since" in text)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 20) == 130
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await asyncio.to_thread(out.closed.wait, 10)
    text = out.text
    # One clear at the start, then every round goes home and overwrites: in place.
    assert text.count(checkview.CLEAR_SCREEN) == 1
    rounds = text.count(checkview.HOME)
    assert rounds >= 2, text
    frames = [ANSI.sub("", frame) for frame in text.split(checkview.HOME)[1:]]
    assert all(re.search(r"check every 0.5 s, round \d+, ", frame) for frame in frames)
    last = frames[-1] if "SERVICE" in frames[-1] else frames[-2]
    assert re.search(r"^Facebook\s+down\s+http\s", last, re.MULTILINE), last
    assert "\x1b[31mdown" in text and "\x1b[1;31mFacebook is down at HTTP" in text
    assert all(len(line) < 120 for frame in frames for line in frame.splitlines())


async def test_no_color_on_a_terminal_keeps_redrawing_but_drops_colour(config_file: Path) -> None:
    process, out = await start_in_pty(
        "check",
        "--config.file",
        str(config_file),
        "--watch",
        "0.3",
        "--count",
        "2",
        environ=terminal_env(NO_COLOR="1"),
    )
    assert await asyncio.wait_for(process.wait(), 30) == 0
    await asyncio.to_thread(out.closed.wait, 10)
    text = out.text
    assert text.count(checkview.HOME) == 2 and "round 2," in text
    assert not re.search(r"\x1b\[[0-9;]*m", text), "colour despite NO_COLOR"


async def test_watch_through_a_pipe_appends_rounds_without_escape_codes(config_file: Path) -> None:
    code, out, err = await run_cli(
        "check", "--config.file", str(config_file), "--watch", "0.3", "--count", "2"
    )
    assert code == 0, err
    assert "\x1b" not in out
    rounds = re.findall(r"^--- round (\d), \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC ---$", out, re.M)
    assert rounds == ["1", "2"]
    assert out.count("All Meta services are up") == 2


async def test_watch_json_prints_one_document_per_line(config_file: Path) -> None:
    code, out, _ = await run_cli(
        "check", "--config.file", str(config_file), "--watch", "0.3", "--count", "2", "--json"
    )
    assert code == 0
    documents = [json.loads(line) for line in out.splitlines()]
    assert len(documents) == 2
    assert [d["headline"]["text"] for d in documents] == ["All Meta services are up"] * 2
    # One runtime across rounds: the second round's `since` is the first one's.
    since = [{s["name"]: s.get("since") for s in d["services"]} for d in documents]
    assert since[0] == since[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "2"], "--count needs --watch"),
        (["--watch", "0"], "'0' is not a positive number of seconds"),
        (["--watch", "1", "--count", "0"], "'0' is not a positive whole number"),
    ],
)
async def test_watch_flag_errors(config_file: Path, args: list[str], message: str) -> None:
    code, _, err = await run_cli("check", "--config.file", str(config_file), *args)
    assert code == 2 and message in err, err
