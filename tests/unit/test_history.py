"""The bounded history: only changes are kept, and memory is bounded by age and by count."""

from __future__ import annotations

import itertools

from exporter.engine.history import VANTAGE, History, Segment, Timeline
from exporter.model import Layer, Status

HOUR = 3600.0


def test_only_changes_make_segments_and_the_last_one_is_open() -> None:
    timeline = Timeline(window=6 * HOUR, max_segments=10)
    timeline.note(100.0, Status.UNKNOWN, Layer.NONE)
    for t in range(101, 200):
        timeline.note(float(t), Status.UP, Layer.NONE)  # the same state, again and again
    timeline.note(200.0, Status.DOWN, Layer.DNS)
    timeline.note(230.0, Status.DOWN, Layer.BGP)  # a layer change inside "down" is a segment
    assert timeline.segments(240.0) == [
        Segment(100.0, Status.UNKNOWN, Layer.NONE, 101.0),
        Segment(101.0, Status.UP, Layer.NONE, 200.0),
        Segment(200.0, Status.DOWN, Layer.DNS, 230.0),
        Segment(230.0, Status.DOWN, Layer.BGP, None),
    ]


def test_a_flapping_service_is_bounded_by_count() -> None:
    timeline = Timeline(window=6 * HOUR, max_segments=64)
    states = [(Status.UP, Layer.NONE), (Status.DOWN, Layer.HTTP)]
    for i in range(100_000):  # one flap per 100 ms: all of it inside the window
        timeline.note(i / 10, *states[i % 2])
    segments = timeline.segments(10_000.0)
    assert len(timeline) == len(segments) == 64
    # The newest are kept, oldest dropped, and they still chain end to start.
    assert segments[-1] == Segment(9999.9, Status.DOWN, Layer.HTTP, None)
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))


def test_old_segments_age_out_but_the_one_spanning_the_window_start_stays() -> None:
    timeline = Timeline(window=HOUR, max_segments=1000)
    for minute in range(0, 120, 10):  # a change every 10 minutes for 2 hours
        timeline.note(minute * 60.0, Status.DOWN if minute % 20 else Status.UP, Layer.NONE)
    now = 125 * 60.0
    segments = timeline.segments(now)
    horizon = now - HOUR
    assert segments[0].start <= horizon < (segments[0].end or now), "the window start is covered"
    assert all(s.start > horizon for s in segments[1:])
    assert [s.start / 60 for s in segments] == [60, 70, 80, 90, 100, 110]


def test_a_steady_service_costs_one_segment_however_long_it_runs() -> None:
    history = History(window=HOUR, max_segments=512)
    for second in range(0, 48 * 3600, 15):  # two days of probes every 15 s, all up
        history.note("facebook", float(second), Status.UP)
        history.note(VANTAGE, float(second), Status.UP)
    assert history.size() == 2
    [segment] = history.segments("facebook", 48 * 3600.0)
    assert segment.start == 0.0 and segment.end is None


def test_memory_does_not_grow_with_uptime() -> None:
    """A week of a service changing state every minute: the size stays at the window's worth."""
    history = History(window=HOUR, max_segments=512)
    sizes = []
    for minute in range(7 * 24 * 60):
        status = Status.UP if minute % 2 else Status.DEGRADED
        history.note("instagram", minute * 60.0, status)
        if minute % (24 * 60) == 0:
            sizes.append(history.size())
    assert max(sizes[1:]) <= 61 and len(set(sizes[1:])) == 1, sizes


def test_retain_forgets_services_a_reload_removed_but_never_the_vantage() -> None:
    history = History()
    for name in ("facebook", "threads", VANTAGE):
        history.note(name, 1.0, Status.UP)
    history.retain(["facebook"])
    assert history.segments("threads", 2.0) == []
    assert history.segments("facebook", 2.0) and history.segments(VANTAGE, 2.0)
