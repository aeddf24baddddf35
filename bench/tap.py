"""Our exporter's own command line, unchanged, recording every probe's timing and every
scheduler-lag observation; written to a JSON file when the exporter exits.

    python -m bench.tap OUT.json run --config.file ... --web.listen-address ...

The histograms the exporter exports have buckets; percentiles to the millisecond need the
raw values. Recording is two appends into flat arrays per probe (about 40 bytes each), so
it costs the exporter next to nothing; nothing is written until it exits (SIGTERM).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from exporter.model import Phase, ProbeResult
from exporter.spec import CheckSpec

try:
    from exporter.cli import commands
    from exporter.engine import runtime as runtime_module
    from exporter.engine.store import Histogram
except ImportError:  # a "before" tree from ahead of the rooms (issue 18): a flat package
    from exporter.store import Histogram  # type: ignore[no-redef]

    from exporter import cli as commands  # type: ignore[no-redef]
    from exporter import runtime as runtime_module  # type: ignore[no-redef]


class Recorder:
    def __init__(self) -> None:
        self.started_at = array("d")
        self.duration = array("d")
        self.processing = array("d")  # nan when the probe has no processing phase
        self.failed = 0
        self.lag_at = array("d")
        self.lag = array("d")
        self.gc_at = array("d")  # each garbage collection: when, how long, which generation
        self.gc_pause = array("d")
        self.gc_generation = array("b")
        self.gc_collected = array("l")  # objects freed by the collector: cyclic garbage
        self._gc_started = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        self.gc_at.append(time.time())
        self.gc_pause.append(time.perf_counter() - self._gc_started)
        self.gc_generation.append(info["generation"])
        self.gc_collected.append(info["collected"])

    def result(self, result: ProbeResult) -> None:
        if not result.success:
            self.failed += 1
        self.started_at.append(result.started_at)
        self.duration.append(result.duration)
        self.processing.append(result.phases.get(Phase.PROCESSING, float("nan")))

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": list(self.started_at),
            "duration": list(self.duration),
            "processing": [None if p != p else p for p in self.processing],
            "failed": self.failed,
            "lag_at": list(self.lag_at),
            "lag": list(self.lag),
            "gc_at": list(self.gc_at),
            "gc_pause": list(self.gc_pause),
            "gc_generation": list(self.gc_generation),
            "gc_collected": list(self.gc_collected),
        }


def install(recorder: Recorder) -> None:
    """Wrap Runtime.on_result, and make the scheduler-lag histogram keep raw values too."""
    original = runtime_module.Runtime.on_result

    def on_result(self: runtime_module.Runtime, check: CheckSpec, result: ProbeResult) -> int:
        recorder.result(result)
        return original(self, check, result)

    class LagHistogram(Histogram):
        def observe(self, value: float) -> None:
            recorder.lag_at.append(time.time())
            recorder.lag.append(value)
            super().observe(value)

    gc.callbacks.append(recorder.on_gc)
    runtime_module.Runtime.on_result = on_result  # type: ignore[method-assign]
    # Runtime builds its scheduler-lag histogram from this module-level name.
    runtime_module.Histogram = LagHistogram  # type: ignore[misc]


def main(argv: list[str]) -> int:
    out, args = Path(argv[0]), argv[1:]
    if args and args[0] == "--uvloop":  # temporary A/B switch
        import uvloop

        uvloop.install()
        args = args[1:]
    recorder = Recorder()
    install(recorder)
    try:
        return commands.main(args)
    finally:
        document = recorder.to_json()
        if os.environ.get("BENCH_GC_CENSUS"):  # which objects the collector keeps walking
            from collections import Counter

            document["gc_census"] = {
                str(gen): Counter(type(o).__name__ for o in gc.get_objects(gen)).most_common(25)
                for gen in range(3)
            }
            document["gc_frozen"] = gc.get_freeze_count()
        out.write_text(json.dumps(document))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
