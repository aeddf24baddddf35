"""The real exporter as a subprocess (`python -m exporter run`), its log collected as it runs.

The log is read continuously (a full stderr pipe would block the exporter at DEBUG) and
kept whole, so tests can search every line it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator

CLI = [sys.executable, "-m", "exporter"]


class ExporterProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.base = ""
        self._listening = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := (await self.process.stderr.readline()).decode():
            self.lines.append(line)
            match = re.search(r"listening on (https?://127\.0\.0\.1:\d+)/", line)
            if match and not self.base:
                self.base = match.group(1)
                self._listening.set()
        self._listening.set()  # exited: wake the waiter, which sees no base

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def wait_listening(self, timeout: float = 20) -> str:
        await asyncio.wait_for(self._listening.wait(), timeout)
        assert self.base, f"exporter exited before listening:\n{self.log}"
        return self.base

    async def wait_log(self, needle: str, timeout: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while needle not in self.log:
            assert asyncio.get_running_loop().time() < deadline, f"no {needle!r} in:\n{self.log}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self._reader


@contextlib.asynccontextmanager
async def exporter_process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ExporterProcess]:
    """`exporter run ARGS --web.listen-address 127.0.0.1:0`, listening when yielded."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        *args,
        "--web.listen-address",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    running = ExporterProcess(process)
    try:
        await running.wait_listening()
        yield running
    finally:
        await running.stop()
