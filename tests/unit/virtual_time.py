"""An asyncio event loop on virtual time, for tests of timers (the scheduler, the runtime):
the loop's clock is a number, and its selector moves that number on by the timeout it is
asked to wait instead of waiting, so hours of probing run in milliseconds and replay exactly.
Nothing here may open a socket (the loop's own self-pipe aside)."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class VirtualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _VirtualSelector(selectors.SelectSelector):
    """register/unregister as usual (the loop's self-pipe); select() never waits: it moves
    the clock on by the timeout and reports no events."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("the virtual loop has nothing scheduled: it would wait forever")
        self._clock.now += max(0.0, timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self._virtual_clock = clock
        super().__init__(_VirtualSelector(clock))

    def time(self) -> float:
        return self._virtual_clock.now
