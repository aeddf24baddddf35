"""Bounded in-memory history: per service (and for the vantage), when its status changed.

Only changes are kept, as segments (start, status, layer) that last until the next one, so
a steady service costs one entry however long it runs. Memory is bounded twice: by age
(segments that ended before the window are dropped) and by count (a deque with maxlen, so
even a service that flaps every second keeps at most `max_segments`). Nothing here grows
with uptime. Owned by the event loop thread like the results store: no locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.model import Layer, Status

DEFAULT_WINDOW = 6 * 3600.0
# 6 h / 512 = one change every 42 s on average before the oldest are dropped early.
DEFAULT_MAX_SEGMENTS = 512

VANTAGE = "vantage"  # the timeline of the vantage's own health (up / down)


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    status: Status
    layer: Layer
    end: float | None = None  # None: still going on


class Timeline:
    """One subject's status changes, bounded by age and count."""

    def __init__(self, window: float, max_segments: int) -> None:
        self.window = window
        self._changes: deque[tuple[float, Status, Layer]] = deque(maxlen=max_segments)

    def __len__(self) -> int:
        return len(self._changes)

    def note(self, now: float, status: Status, layer: Layer) -> None:
        """Record the current state; only a change of status or layer adds a segment."""
        if self._changes and self._changes[-1][1:] == (status, layer):
            self.prune(now)
            return
        self._changes.append((now, status, layer))
        self.prune(now)

    def prune(self, now: float) -> None:
        """Drop segments that ended before the window; the one spanning its start stays."""
        horizon = now - self.window
        while len(self._changes) > 1 and self._changes[1][0] <= horizon:
            self._changes.popleft()

    def segments(self, now: float) -> list[Segment]:
        self.prune(now)
        changes = list(self._changes)
        ends: list[float | None] = [start for start, _, _ in changes[1:]]
        ends.append(None)
        return [
            Segment(start, status, layer, end)
            for (start, status, layer), end in zip(changes, ends, strict=True)
        ]


class History:
    """Timelines by name: one per Meta service, plus VANTAGE."""

    def __init__(
        self, window: float = DEFAULT_WINDOW, max_segments: int = DEFAULT_MAX_SEGMENTS
    ) -> None:
        self.window = window
        self.max_segments = max_segments
        self._timelines: dict[str, Timeline] = {}

    def note(self, name: str, now: float, status: Status, layer: Layer = Layer.NONE) -> None:
        timeline = self._timelines.get(name)
        if timeline is None:
            timeline = self._timelines[name] = Timeline(self.window, self.max_segments)
        timeline.note(now, status, layer)

    def retain(self, names: Iterable[str]) -> None:
        """Forget subjects a config reload removed (the set of names is bounded by config)."""
        keep = {*names, VANTAGE}
        for name in list(self._timelines):
            if name not in keep:
                del self._timelines[name]

    def segments(self, name: str, now: float) -> list[Segment]:
        timeline = self._timelines.get(name)
        return timeline.segments(now) if timeline is not None else []

    def size(self) -> int:
        """Segments held in total (for tests of the bounds)."""
        return sum(len(t) for t in self._timelines.values())
