"""A prober that crashes on every probe: its checks read internal_error, the traceback is
logged once (not once per probe), and every other check keeps probing on schedule.

The crash is injected by swapping the tcp prober's body in the registry for one that raises
(a real bug cannot be summoned on demand); everything else is the real runtime against the
loopback fake Meta.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from exporter.config import loader
from exporter.engine.runtime import Runtime
from exporter.model import Reason
from exporter.probes import REGISTRY, ProberKind
from exporter.probes.base import ProbeEnv, ProbeRun
from exporter.spec import CheckSpec


async def crashing(check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> str:
    raise ZeroDivisionError("a bug in the prober")


async def test_a_crashing_prober_stops_nothing_else(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(REGISTRY, "tcp", ProberKind(REGISTRY["tcp"].params, crashing))
    caplog.set_level(logging.DEBUG, logger="exporter.probes.base")
    runtime = Runtime(loader.load(str(config_file)))
    runtime.start()
    try:
        records = runtime.store.records
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while records[("whatsapp", "chat")].probes_total < 5 or any(
            r.probes_total < 3 for r in records.values()
        ):
            assert loop.time() < deadline, {k: r.probes_total for k, r in records.items()}
            await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    chat = records[("whatsapp", "chat")]
    assert chat.last is not None and chat.last.reason is Reason.INTERNAL_ERROR
    assert chat.last.detail == "internal error: ZeroDivisionError"
    others = [r for key, r in records.items() if key != ("whatsapp", "chat")]
    assert all(r.last is not None and r.last.success for r in others)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1, [r.getMessage() for r in with_traceback]
    assert "crashed on check whatsapp/chat" in with_traceback[0].getMessage()
    repeats = [r for r in caplog.records if "crashed again" in r.getMessage()]
    assert len(repeats) >= 4 and all(r.levelno == logging.DEBUG for r in repeats)
