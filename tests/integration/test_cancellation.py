"""Cancelling probes at any moment (reload, shutdown) ends them promptly and leaks nothing.

Regression test: closing a socket that asyncio's transport already owned freed its fd number
while the transport was still registered, so the next probe crashed with "File descriptor N
is used by transport" and a cancelled scheduler could wait forever.
"""

from __future__ import annotations

import asyncio
import os
import random

from exporter.model import Reason
from exporter.probes import ProbeEnv, run_probe
from exporter.sim.frontend import FrontendServer
from tests.conftest import make_check


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_random_cancellation_never_hangs_or_leaks(
    probe_env: ProbeEnv, frontend: FrontendServer
) -> None:
    check = make_check("http", url=f"https://www.facebook.com:{frontend.port}/", timeout=2.0)
    assert (await run_probe(check, probe_env)).success
    rng = random.Random(7)
    baseline = open_fds()
    for _ in range(150):
        task = asyncio.create_task(run_probe(check, probe_env))
        await asyncio.sleep(rng.uniform(0, 0.012))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)
        assert done, "a cancelled probe did not end"
        if not task.cancelled():
            assert task.result().reason is not Reason.INTERNAL_ERROR, task.result().detail
    result = await run_probe(check, probe_env)
    assert result.success, result.detail
    await asyncio.sleep(0.1)  # let closed transports finish closing
    assert open_fds() <= baseline + 2
