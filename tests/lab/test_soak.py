"""Soak, the CI version: 60 s of bench/soak.py (100 extra checks at 100 ms, faults toggling
every 5 s) and no growth in the exporter's open fds or asyncio tasks.

The 30-minute run and its figures: docs/benchmarks-soak.md. Growth is judged on medians of
five samples (start after a warm-up, end), with a tolerance for what legitimately varies
with the fault in force (connections and probes in flight); a leak of one fd or task per
probe would add thousands here.
"""

from __future__ import annotations

import pytest

from bench import soak
from tests.lab import netns

DURATION = 60.0
WARMUP = 15.0


def allowed(start: float) -> float:
    return start + max(10.0, 0.25 * start)


@pytest.mark.root
def test_fds_and_tasks_stay_flat_under_load_and_faults() -> None:
    why = netns.require_root()
    if why is not None:
        pytest.skip(why)
    with soak.soak_lab() as lab:
        samples = soak.run(lab, DURATION, sample_every=2.0, fault_period=5.0)
    fds = soak.trend(samples, "fds", WARMUP, window=5)
    tasks = soak.trend(samples, "tasks", WARMUP, window=5)
    rss = soak.trend(samples, "rss_kib", WARMUP, window=5)
    figures = f"fds {fds}, tasks {tasks}, rss {rss}"
    assert fds.end <= allowed(fds.start), figures
    assert tasks.end <= allowed(tasks.start), figures
    # It really was under load (hundreds of probes a second) and faults were applied.
    probes = samples[-1].probes - samples[0].probes
    assert probes > 50 * DURATION, f"only {probes:.0f} probes"
    assert {s.fault for s in samples} > {"none"}
