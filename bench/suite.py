"""The benchmark suite: our exporter against blackbox_exporter, side by side. A report with
figures, not a timed test. Root (blackbox resolves through a bind-mounted resolv.conf, the
bench DNS server binds port 53, the time-to-detect stage uses the outage lab).

    sudo .venv/bin/python -m bench.suite                 # full run, about 25 minutes
    sudo .venv/bin/python -m bench.suite --quick         # a few minutes, fewer samples

Writes docs/benchmarks.md and docs/benchmarks.json (every figure, raw) and prints each
figure with the exporter/blackbox ratio as it comes. Stages:

1. cpu: CPU seconds per 1000 probes and peak RSS, HTTPS / DNS / TCP, several rounds,
   the subjects interleaved (their order alternates), medians reported.
2. timing: HTTPS with 50 and 200 ms injected server delay, 10 / 100 / 1000 checks fired
   together each interval: measured minus injected, p50 and p99.
3. scale: the most HTTPS checks at a 15 s interval one core sustains (p99 scheduler lag
   < 50 ms, p99 timing error < 5 ms); memory per check; /metrics render time; blackbox at
   the same load.
4. detect: fault -> status change and -> page in the outage lab (bench/time_to_page.py).

Both exporters probe only loopback: the bench servers (bench/servers.py) on 127.0.0.1 and
the bench DNS server on a 127.77.x.y address. Subjects run on CPU 0 (taskset), the servers
(reniced) and this harness on CPU 1; their CPU is measured apart and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pycurl

from bench import procstat, report
from bench.floor import openssl_floor
from bench.proc import SERVER_NICE, SUBJECT_NICE
from bench.session import (
    Blackbox,
    Floor,
    Ours,
    Servers,
    Session,
    Subject,
    measure,
    start_servers,
)
from bench.stats import median, percentile, ratio
from bench.workload import FLOORS, KINDS, SUBJECTS, Workload

REPO = Path(__file__).resolve().parents[1]
SUBJECT_CPUS = "0"
HELPER_CPUS = "1"
SCALE_INTERVAL = 15.0
SCALE_DELAY_MS = 50
LAG_GOAL = 0.050
TIMING_GOAL = 0.005


@dataclass(frozen=True)
class Plan:
    rounds: int = 3
    warmup: float = 3.0
    cpu_checks: int = 100
    cpu_interval: float = 2.0  # 50 probes a second each: all subjects at once stay < 50 % of a core
    cpu_window: float = 15.0  # a multiple of the 15 s scrape: each window holds its scrapes
    timing_levels: tuple[int, ...] = (10, 100, 1000)
    timing_delays: tuple[int, ...] = (50, 200)
    timing_window: float = 20.0
    scale_start: int = 2000
    scale_steps: int = 4
    scale_warmup: float = 10.0  # after /-/ready, i.e. after the first round
    scale_window: float = 30.0
    detect_runs: int = 1
    stages: tuple[str, ...] = ("cpu", "timing", "scale", "detect")
    kinds: tuple[str, ...] = KINDS

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            rounds=1,
            warmup=3.0,
            cpu_window=15.0,
            timing_levels=(10, 100),
            timing_delays=(50,),
            timing_window=10.0,
            scale_steps=1,
            scale_warmup=10.0,
            scale_window=15.0,
            stages=("cpu", "timing", "scale"),
        )

    @classmethod
    def smoke(cls) -> Plan:
        """Seconds, not minutes: the report's structure, for tests/bench (no figure to trust)."""
        return replace(
            cls.quick(),
            warmup=1.0,
            cpu_window=3.0,
            cpu_checks=10,
            stages=("cpu",),
            kinds=("https",),
        )


def timing_interval(checks: int) -> float:
    """Fired together within 1 s, then quiet: 1000 probes need longer to drain (pure)."""
    if checks <= 10:
        return 1.0
    return 2.0 if checks <= 100 else 10.0


# -- one session's figures ---------------------------------------------------------------------


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def summary(session: Session) -> dict[str, Any]:
    per_1000 = 1000 / session.probes if session.probes else 0.0
    processing = session.errors("processing")
    total = session.errors("total")
    return {
        "subject": session.subject,
        "probes": session.probes,
        "failed": session.failed,
        "skipped": session.skipped,
        "window_s": round(session.window, 2),
        "cpu_s": round(session.cpu, 3),
        "cpu_per_1000": session.cpu_per_1000,
        "system_per_1000": session.cpu_system * per_1000,
        "core_share": session.core_share,
        "hwm_mib": session.hwm_kib / 1024,
        "rss_mib": session.rss_kib / 1024,
        "server_cpu_per_1000": {k: v * per_1000 for k, v in session.server_cpu.items()},
        "harness_cpu_per_1000": session.harness_cpu * per_1000,
        "samples": len(processing) or len(total),
        "processing_error_ms": {"p50": ms(percentile(processing, 0.5)),
                                "p99": ms(percentile(processing, 0.99))},
        "total_error_ms": {"p50": ms(percentile(total, 0.5)), "p99": ms(percentile(total, 0.99))},
        "lag_ms": {"p50": ms(percentile(session.lags, 0.5)),
                   "p99": ms(percentile(session.lags, 0.99)),
                   "max": ms(max(session.lags)) if session.lags else None},
        "gc": {
            "collections": len(session.gc_pauses),
            "full": sum(1 for generation, _ in session.gc_pauses if generation == 2),
            "max_pause_ms": ms(max((p for _, p in session.gc_pauses), default=None)),
            "total_ms": ms(sum(p for _, p in session.gc_pauses)),
        },
        "metrics_render_ms": ms(median(session.metrics_render)),
        "metrics_bytes": session.metrics_bytes,
        "last_error": session.last_error,
    }  # fmt: skip


def shared_cpu(sessions: list[Session]) -> dict[str, Any]:
    """The servers' and this harness's CPU over a side-by-side window, per 1000 probes of
    all the subjects together (it cannot be told apart per subject)."""
    probes = sum(s.probes for s in sessions) or 1
    first = sessions[0]
    return {
        "server_cpu_per_1000": {k: v / probes * 1000 for k, v in first.server_cpu.items()},
        "harness_cpu_per_1000": first.harness_cpu / probes * 1000,
    }


def say(text: str) -> None:
    print(text, flush=True)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# -- stages ------------------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    servers: Servers
    workdir: Path
    before_tree: Path | None = None
    counter: int = 0

    def _dir(self, name: str) -> Path:
        self.counter += 1
        return self.workdir / f"{self.counter:03d}-{name}"

    def _ours(self, workload: Workload, **kwargs: Any) -> Ours:
        return Ours(self._dir("ours"), workload, self.servers, cpus=SUBJECT_CPUS, **kwargs)

    def _before(self, workload: Workload, **kwargs: Any) -> Ours:
        directory = self._dir("before")
        return Ours(
            directory,
            workload,
            self.servers,
            cpus=SUBJECT_CPUS,
            tree=self.before_tree,
            subject="before",
            **kwargs,
        )

    def _floor(self, workload: Workload, name: str) -> Floor:
        engine = name.removeprefix("floor_")
        if engine == "openssl":
            openssl_floor()  # built here, once: a missing compiler stops the suite, named
        return Floor(self._dir(name), workload, self.servers, engine=engine, cpus=SUBJECT_CPUS)

    def _blackbox(self, workload: Workload) -> Blackbox:
        return Blackbox(self._dir("blackbox"), workload, self.servers, cpus=SUBJECT_CPUS)

    async def _alone(self, subject: Subject, warmup: float | None, window: float) -> Session:
        warm = self.plan.warmup if warmup is None else warmup
        return (await measure([subject], warm, window))[0]

    async def ours(self, workload: Workload, *, window: float, warmup: float | None = None,
                   **kwargs: Any) -> Session:  # fmt: skip
        return await self._alone(self._ours(workload, **kwargs), warmup, window)

    async def before(self, workload: Workload, *, window: float, warmup: float | None = None,
                     **kwargs: Any) -> Session:  # fmt: skip
        return await self._alone(self._before(workload, **kwargs), warmup, window)

    async def blackbox(self, workload: Workload, *, window: float,
                       warmup: float | None = None) -> Session:  # fmt: skip
        return await self._alone(self._blackbox(workload), warmup, window)

    def subjects(self, round_: int, before: bool = True) -> list[Callable[..., Any]]:
        """One at a time, the order alternating per round, so drifting load hits both alike."""
        order: list[Callable[..., Any]] = [self.ours, self.blackbox]
        if before and self.before_tree is not None:
            order.append(self.before)
        return order if round_ % 2 == 0 else order[::-1]

    async def cpu(self) -> dict[str, Any]:
        """Side by side: every subject probes at once, over the same seconds of the same
        machine, so load that comes and goes hits them alike; CPU time is each one's own."""
        plan, out = self.plan, {}
        for kind in plan.kinds:
            workload = Workload(kind, plan.cpu_checks, plan.cpu_interval)
            rounds: list[dict[str, Any]] = []
            for round_ in range(plan.rounds):
                able = SUBJECTS[kind]
                subjects: list[Subject] = [self._ours(workload)]
                if "blackbox" in able:
                    subjects.append(self._blackbox(workload))
                if self.before_tree is not None and "before" in able:
                    subjects.append(self._before(workload))
                subjects += [self._floor(workload, f) for f in FLOORS if f in able]
                if round_ % 2:
                    subjects.reverse()  # which one starts first
                sessions = await measure(subjects, plan.warmup, plan.cpu_window)
                figures: dict[str, Any] = {s.subject: summary(s) for s in sessions}
                figures["shared"] = shared_cpu(sessions)
                for session in sessions:
                    say(
                        f"cpu {kind} round {round_ + 1} {session.subject}: "
                        f"{fmt(session.cpu_per_1000, 3)} CPU s per 1000 probes "
                        f"({session.probes} probes, {session.failed} failed), "
                        f"peak RSS {session.hwm_kib / 1024:.1f} MiB"
                    )
                rounds.append(figures)
            keys = ("cpu_per_1000", "system_per_1000", "hwm_mib")
            medians: dict[str, Any] = {
                subject: {key: median(r[subject][key] for r in rounds) for key in keys}
                for subject in rounds[0]
                if subject != "shared"
            }
            medians["shared"] = {
                "harness_cpu_per_1000": median(r["shared"]["harness_cpu_per_1000"] for r in rounds),
                "server_cpu_per_1000": {
                    role: median(r["shared"]["server_cpu_per_1000"][role] for r in rounds)
                    for role in rounds[0]["shared"]["server_cpu_per_1000"]
                },
            }
            reference = medians.get("blackbox", {})
            ratios = {
                key: ratio(medians["ours"][key], reference.get(key))
                for key in ("cpu_per_1000", "hwm_mib")
            }
            say(
                f"cpu {kind}: ours/blackbox CPU per probe {fmt(ratios['cpu_per_1000'])}, "
                f"peak RSS {fmt(ratios['hwm_mib'])}"
            )
            out[kind] = {
                "workload": workload.label(),
                "rate": workload.rate,
                "rounds": rounds,
                "median": medians,
                "ratio": ratios,
            }
        return out

    async def timing(self) -> list[dict[str, Any]]:
        plan, out = self.plan, []
        for delay in plan.timing_delays:
            for index, checks in enumerate(plan.timing_levels):
                workload = Workload(
                    "https",
                    checks,
                    timing_interval(checks),
                    delay_ms=delay,
                    burst=True,
                    max_concurrency=max(checks, 32),
                )
                level: dict[str, Any] = {
                    "delay_ms": delay,
                    "checks": checks,
                    "interval": workload.interval,
                    "workload": workload.label(),
                }
                for subject in self.subjects(index, before=False):
                    session = await subject(workload, window=plan.timing_window)
                    level[session.subject] = summary(session)
                ours, theirs = level["ours"], level["blackbox"]
                level["ratio"] = {
                    f"{which}_{q}": ratio(
                        ours[f"{which}_error_ms"][q], theirs[f"{which}_error_ms"][q]
                    )
                    for which in ("processing", "total")
                    for q in ("p50", "p99")
                }
                level["no_worse"] = all(
                    ours["processing_error_ms"][q] <= theirs["processing_error_ms"][q]
                    for q in ("p50", "p99")
                )
                say(
                    f"timing {delay} ms x {checks}: error p50/p99 ours "
                    f"{fmt(ours['processing_error_ms']['p50'])}/"
                    f"{fmt(ours['processing_error_ms']['p99'])} ms, blackbox "
                    f"{fmt(theirs['processing_error_ms']['p50'])}/"
                    f"{fmt(theirs['processing_error_ms']['p99'])} ms; ratio "
                    f"{fmt(level['ratio']['processing_p50'])}/"
                    f"{fmt(level['ratio']['processing_p99'])}"
                )
                out.append(level)
        return out

    def _scale_workload(self, checks: int) -> Workload:
        return Workload("https", checks, SCALE_INTERVAL, delay_ms=SCALE_DELAY_MS)

    async def _scale_step(
        self, checks: int, subject: Callable[..., Any], *, short: bool = False
    ) -> dict[str, Any]:
        plan = self.plan
        extra = {} if subject == self.blackbox else {"render_samples": 5}
        session = await subject(
            self._scale_workload(checks),
            warmup=plan.warmup if short else plan.scale_warmup,
            window=SCALE_INTERVAL if short else plan.scale_window,
            **extra,
        )
        figures = summary(session)
        figures["checks"] = checks
        expected = checks * session.window / SCALE_INTERVAL
        figures["expected_probes"] = expected
        lag_p99 = percentile(session.lags, 0.99) if session.lags else None
        timing_p99 = percentile(session.errors("processing"), 0.99)
        figures["passed"] = (
            (lag_p99 is None or lag_p99 < LAG_GOAL)
            and timing_p99 is not None
            and timing_p99 < TIMING_GOAL
            and session.probes >= 0.9 * expected
            and session.failed == 0
        )
        say(
            f"scale {session.subject} {checks} checks: lag p99 {fmt(ms(lag_p99))} ms, "
            f"timing p99 {fmt(ms(timing_p99))} ms, {session.probes}/{expected:.0f} probes, "
            f"{session.core_share:.0%} of a core, RSS {session.rss_kib / 1024:.1f} MiB, "
            f"GC max pause {fmt(figures['gc']['max_pause_ms'])} ms: "
            f"{'pass' if figures['passed'] else 'FAIL'}"
        )
        return figures

    async def scale(self) -> dict[str, Any]:
        plan = self.plan
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        lowest_fail: int | None = None
        checks = plan.scale_start
        for _ in range(plan.scale_steps):
            step = await self._scale_step(checks, self.ours)
            steps.append(step)
            if step["passed"]:
                best = step if best is None or checks > best["checks"] else best
            else:
                lowest_fail = checks if lowest_fail is None else min(lowest_fail, checks)
            checks = next_scale_size(best["checks"] if best else None, lowest_fail)
            if checks is None or any(s["checks"] == checks for s in steps):
                break
        found = best or min(steps, key=lambda s: s["checks"])
        small = await self._scale_step(100, self.ours, short=True)  # memory baseline
        memory_per_check = (found["rss_mib"] - small["rss_mib"]) * 1024 / (found["checks"] - 100)
        reference = await self._scale_step(found["checks"], self.blackbox)
        out: dict[str, Any] = {
            "interval": SCALE_INTERVAL,
            "delay_ms": SCALE_DELAY_MS,
            "steps": steps,
            "max_checks": best["checks"] if best else None,
            "lowest_failing": lowest_fail,
            "at_max": found,
            "baseline_100": small,
            "memory_per_check_kib": memory_per_check,
            "blackbox_at_max": reference,
        }
        if self.before_tree is not None:
            out["before_at_max"] = await self._scale_step(found["checks"], self.before)
        out["ratio"] = {
            "core_share": ratio(found["core_share"], reference["core_share"]),
            "timing_p99": ratio(
                found["processing_error_ms"]["p99"], reference["processing_error_ms"]["p99"]
            ),
            "rss_mib": ratio(found["rss_mib"], reference["rss_mib"]),
        }
        say(
            f"scale: {out['max_checks']} checks per core at 15 s; memory "
            f"{memory_per_check:.1f} KiB per check; /metrics {fmt(found['metrics_render_ms'])} ms "
            f"for {found['metrics_bytes']} bytes; ours/blackbox at that load: core "
            f"{fmt(out['ratio']['core_share'])}, timing p99 {fmt(out['ratio']['timing_p99'])}, "
            f"RSS {fmt(out['ratio']['rss_mib'])}"
        )
        return out


def next_scale_size(best: int | None, lowest_fail: int | None) -> int | None:
    """The next size to try: up by half while passing, down by a third while failing, then
    halve the gap; None once within 10 % (pure)."""
    if lowest_fail is None:
        assert best is not None
        return round_size(best * 1.5)
    if best is None:
        return round_size(lowest_fail / 1.5) if lowest_fail > 100 else None
    if lowest_fail - best <= max(100, best // 10):
        return None
    return round_size((best + lowest_fail) / 2)


def round_size(value: float) -> int:
    return max(100, round(value / 100) * 100)


async def detect(plan: Plan, workdir: Path) -> dict[str, Any]:
    """Stage 4 through the time-to-page harness, ours and the reference side by side in the
    same runs, every fault and state (its own report: docs/benchmarks-time-to-page.md)."""
    from bench import time_to_page as ttp

    outcomes = await asyncio.to_thread(
        ttp.measure, plan.detect_runs, 1, 20261203, workdir, workdir / "detect-progress.json"
    )
    out: dict[str, Any] = {}
    for setup in ttp.SETUPS:
        pages = [t for o in outcomes if (t := o.page_after[setup]) is not None]
        out[setup] = {
            "pages_after": pages,
            "no_page": sum(o.page_after[setup] is None for o in outcomes),
            "false_pages": sum(o.false_pages[setup] for o in outcomes),
            "page_median": median(pages),
        }
    out["ratio"] = {"page": ratio(out["ours"]["page_median"], out["reference"]["page_median"])}
    say(
        f"detect: page {fmt(out['ours']['page_median'], 1)} vs "
        f"{fmt(out['reference']['page_median'], 1)} s; ratio {fmt(out['ratio']['page'])}"
    )
    return out


# -- the run -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    version = subprocess.run(
        ["prometheus-blackbox-exporter", "--version"], capture_output=True, text=True, check=False
    )
    return {
        "host": platform.node(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "pycurl": pycurl.version,  # libcurl, the wheel's own OpenSSL: the curl and openssl floors
        "blackbox": (version.stdout + version.stderr).splitlines()[0] if version.returncode == 0
        else "not found",
    }  # fmt: skip


async def run(
    plan: Plan, workdir: Path, before_tree: Path | None, progress: Path
) -> dict[str, Any]:
    """Every stage of the plan; each stage's figures are saved to `progress` as it ends."""
    results: dict[str, Any] = {}
    servers = await asyncio.to_thread(start_servers, workdir / "servers", HELPER_CPUS)
    bench = Bench(plan, servers, workdir, before_tree)
    try:
        for stage in ("cpu", "timing", "scale"):
            if stage in plan.stages:
                say(f"== stage {stage} (load {os.getloadavg()[0]:.2f})")
                results[stage] = await getattr(bench, stage)()
                progress.write_text(json.dumps(results, indent=1))
    finally:
        servers.stop()
    results["servers"] = servers.stats()
    if "detect" in plan.stages:
        say(f"== stage detect (load {os.getloadavg()[0]:.2f})")
        results["detect"] = await detect(plan, workdir / "detect")
    return results


def before_tree(ref: str, into: Path) -> Path:
    """exporter/ as of git `ref`, extracted under `into` (for --before-ref)."""
    archive = subprocess.run(
        ["git", "archive", ref, "exporter"], cwd=REPO, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description="Our exporter against blackbox_exporter; writes docs/benchmarks.md.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: checks the harness, figures meaningless"
    )
    parser.add_argument("--stages", help="comma-separated subset of cpu,timing,scale,detect")
    parser.add_argument("--rounds", type=int, help="rounds of the cpu stage")
    before = parser.add_mutually_exclusive_group()
    before.add_argument(
        "--before-tree", type=Path, help="a directory holding an older exporter/: measured too"
    )
    before.add_argument("--before-ref", help="a git commit whose exporter/ is measured too")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.suite needs root (DNS on port 53, a private mount for blackbox, the lab)")
        return 2
    # SIGTERM unwinds like Ctrl-C: every server, exporter and lab we started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    plan = Plan.smoke() if args.smoke else Plan.quick() if args.quick else Plan()
    if args.stages:
        plan = replace(plan, stages=tuple(args.stages.split(",")))
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    command = shlex.join(["python", "-m", "bench.suite", *(sys.argv[1:] if argv is None else argv)])
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": machine(),
        "load_start": os.getloadavg(),
        "steal_start": procstat.steal_seconds(),
        "pinning": {"subjects": SUBJECT_CPUS, "servers_and_harness": HELPER_CPUS},
        "nice": {"subjects": SUBJECT_NICE, "servers": SERVER_NICE},
        "plan": asdict(plan),
        "before": args.before_ref or (str(args.before_tree) if args.before_tree else None),
    }
    started = time.monotonic()
    say(f"bench: {command}; load {meta['load_start']}")
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        tree = args.before_tree
        if args.before_ref:
            tree = before_tree(args.before_ref, Path(workdir) / "before")
        progress = args.out.with_suffix(".partial.json")  # survives a failed stage
        results = asyncio.run(run(plan, Path(workdir), tree, progress))
        progress.unlink(missing_ok=True)
    meta["load_end"] = os.getloadavg()
    meta["steal_s"] = round(procstat.steal_seconds() - meta.pop("steal_start"), 2)
    meta["duration_s"] = round(time.monotonic() - started)
    document = {"meta": meta, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    text = report.render(document, "" if args.smoke else report.analysis())
    args.out.write_text(text)
    say(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
