"""Soak: 100 extra checks at 100 ms intervals in the outage lab, faults toggling, for a long time.

    sudo nice -n 10 .venv/bin/python -m bench.soak --duration 1800 --out docs/benchmarks-soak.md

The exporter runs as in production (its own process, started through the CLI, in the lab's
vantage namespace) with the lab's catalogue plus one service, `soak`, of 100 checks (DNS
recursive and authoritative, TCP, TLS, HTTP) probed every 100 ms. A bounded schedule toggles
one fault after another (nameserver prefixes withdrawn, front ends answering 503 or hanging,
packet loss, SERVFAIL, TCP resets, a silently dropped edge), each for `--fault-period`
seconds with a healed pause after it. Every `--sample-every` seconds the exporter process's
RSS (/proc/PID/status), open fds (/proc/PID/fd) and asyncio tasks
(`meta_exporter_asyncio_tasks` on /metrics) are sampled. The report gives start / end / max
and the slope after warm-up; tests/lab/test_soak.py runs 60 s of this and asserts that fds
and tasks do not grow.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.lab import netns
from tests.lab.topology import Lab

SOAK_SERVICE = "soak"
CHECKS = 100
INTERVAL = "100ms"

# (name, apply, how long it lasts is the caller's): every fault the lab can toggle cheaply.
Fault = tuple[str, Callable[[Lab], None]]
FAULTS: tuple[Fault, ...] = (
    ("withdraw meta DNS prefixes", lambda lab: lab.withdraw("meta-dns-a", "meta-dns-b")),
    ("www.facebook.com 503", lambda lab: lab.http_fault(host="www.facebook.com", status=503)),
    ("graph.facebook.com hangs", lambda lab: lab.http_fault(host="graph.facebook.com", drop=True)),
    ("30% packet loss", lambda lab: lab.loss(30)),
    ("facebook.com SERVFAIL", lambda lab: lab.dns_fault("facebook.com", "servfail")),
    ("TCP reset to WhatsApp", lambda lab: lab.reset_tcp("whatsapp")),
    ("meta edge silently dropped", lambda lab: lab.drop("meta-edge")),
)


def soak_checks(count: int = CHECKS) -> dict[str, dict[str, Any]]:
    """`count` checks over every prober kind, all on lab targets (pure)."""
    kinds: list[dict[str, Any]] = [
        {"kind": "dns", "name": "www.facebook.com"},
        {"kind": "dns", "name": "www.instagram.com"},
        {"kind": "dns", "mode": "authoritative", "name": "facebook.com",
         "nameservers": ["a.ns.facebook.com"]},
        {"kind": "tcp", "host": "g.whatsapp.net", "port": 5222},
        {"kind": "tls", "host": "www.facebook.com"},
        {"kind": "http", "url": "https://www.facebook.com/"},
        {"kind": "http", "url": "https://graph.facebook.com/me", "valid_status_codes": [400]},
        {"kind": "http", "url": "https://www.instagram.com/", "valid_status_codes": ["<500"]},
    ]  # fmt: skip
    common = {"interval": INTERVAL, "recheck_interval": INTERVAL, "timeout": "1s"}
    return {f"c{i:03d}": {**kinds[i % len(kinds)], **common} for i in range(count)}


def soak_config(count: int = CHECKS) -> dict[str, Any]:
    """The overlay on the lab's exporter config: one more service with `count` checks."""
    return {
        "global": {"max_concurrency": 32},
        "services": {SOAK_SERVICE: {"display_name": "Soak", "checks": soak_checks(count)}},
    }


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the soak started
    rss_kib: int
    fds: int
    tasks: int
    probes: float  # meta_probes_total summed: proves the exporter kept probing
    fault: str


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def metric_total(text: str, name: str) -> float:
    """The sum of one metric family's samples in Prometheus text (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def exporter_pid(lab: Lab) -> int:
    """`ip netns exec` execs the command in place, so the Popen pid is the exporter's."""
    process = lab.processes[lab.vantages[0].exporter]
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    if b"exporter" not in cmdline:
        raise RuntimeError(f"pid {process.pid} is not the exporter: {cmdline!r}")
    return process.pid


def take_sample(lab: Lab, pid: int, started: float, fault: str) -> Sample:
    text = lab.metrics()
    return Sample(
        t=round(time.monotonic() - started, 1),
        rss_kib=rss_kib(pid),
        fds=open_fds(pid),
        tasks=int(metric_total(text, "meta_exporter_asyncio_tasks")),
        probes=metric_total(text, "meta_probes_total"),
        fault=fault,
    )


@contextlib.contextmanager
def soak_lab(count: int = CHECKS) -> Iterator[Lab]:
    """A lab whose exporter carries the soak service; torn down on every path."""
    why = netns.require_root()
    if why is not None:
        raise netns.LabError(why)
    lab = Lab().up(start_exporter=False)
    try:
        lab.start_exporter(extra_config=soak_config(count))
        yield lab
    finally:
        lab.down()


def run(
    lab: Lab,
    duration: float,
    *,
    sample_every: float = 5.0,
    fault_period: float = 10.0,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Toggle faults on a fixed cycle (fault, heal, next fault...) and sample until `duration`."""
    pid = exporter_pid(lab)
    started = time.monotonic()
    samples: list[Sample] = []
    step, fault, next_toggle, next_sample = 0, "none", started + fault_period, started
    try:
        while (now := time.monotonic()) < started + duration:
            if now >= next_toggle:
                lab.heal()
                fault = "none"
                if step % 2 == 0:  # odd steps stay healed
                    fault, apply = FAULTS[(step // 2) % len(FAULTS)]
                    apply(lab)
                step += 1
                next_toggle += fault_period
            if now >= next_sample:
                sample = take_sample(lab, pid, started, fault)
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                next_sample += sample_every
            time.sleep(max(0.05, min(next_toggle, next_sample) - time.monotonic()))
            if lab.processes[lab.vantages[0].exporter].poll() is not None:
                raise netns.LabError("the exporter exited during the soak")
    finally:
        lab.heal()
    return samples


# -- analysis (pure) ------------------------------------------------------------------------


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


@dataclass(frozen=True, slots=True)
class Trend:
    start: float  # median of the first `window` samples after warm-up
    end: float  # median of the last `window` samples
    max: float
    slope_per_min: float

    @property
    def growth(self) -> float:
        return self.end - self.start


def trend(samples: list[Sample], field: str, warmup: float, window: int = 3) -> Trend:
    steady = [s for s in samples if s.t >= warmup]
    if len(steady) < 2 * window:
        raise ValueError(f"{len(steady)} samples after warm-up; need {2 * window}")
    values = [float(getattr(s, field)) for s in steady]
    return Trend(
        start=statistics.median(values[:window]),
        end=statistics.median(values[-window:]),
        max=max(values),
        slope_per_min=slope_per_minute([(s.t, v) for s, v in zip(steady, values, strict=True)]),
    )


def report(samples: list[Sample], duration: float, warmup: float, command: str) -> str:
    rss, fds, tasks = (trend(samples, f, warmup) for f in ("rss_kib", "fds", "tasks"))
    probes = samples[-1].probes - samples[0].probes
    seconds = samples[-1].t - samples[0].t
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark: soak",
        "",
        f"Machine: {platform.node() or 'unknown'}, {platform.machine()}, "
        f"Python {platform.python_version()}; {when}; shared with other test runs.",
        f"Reproduce (root): `{command}`.",
        "",
        f"The outage lab's exporter with its catalogue plus {CHECKS} checks (DNS recursive and "
        f"authoritative, TCP, TLS, HTTP) at {INTERVAL} intervals, for {duration / 60:.0f} "
        f"minutes, while faults toggle: {', '.join(name for name, _ in FAULTS)} — each for "
        "the fault period, then healed for as long. "
        f"{probes:.0f} probes in {seconds:.0f} s ({probes / max(seconds, 1):.0f} per second; "
        "100 checks at 100 ms would ask for 1000 per second: the concurrency limit of 32 "
        "and the CPU set the pace, and the scheduler never builds a backlog).",
        "",
        f"Figures after a {warmup:.0f} s warm-up; start and end are medians of three samples.",
        "",
        "| measure | start | end | max | slope per minute |",
        "|---|---|---|---|---|",
        f"| RSS (MiB) | {rss.start / 1024:.1f} | {rss.end / 1024:.1f} | {rss.max / 1024:.1f} "
        f"| {rss.slope_per_min / 1024:+.3f} |",
        f"| open fds | {fds.start:.0f} | {fds.end:.0f} | {fds.max:.0f} "
        f"| {fds.slope_per_min:+.3f} |",
        f"| asyncio tasks | {tasks.start:.0f} | {tasks.end:.0f} | {tasks.max:.0f} "
        f"| {tasks.slope_per_min:+.3f} |",
        "",
        "Per minute (RSS and probes at the minute's last sample; fds and tasks as min-max "
        "over its samples, which vary with the fault in force):",
        "",
        "| minute | RSS (MiB) | fds | tasks | probes | faults applied |",
        "|---|---|---|---|---|---|",
    ]
    minutes: dict[int, list[Sample]] = {}
    for sample in samples:
        minutes.setdefault(int(sample.t // 60), []).append(sample)
    for minute, group in minutes.items():
        last = group[-1]
        faults = ", ".join(dict.fromkeys(s.fault for s in group if s.fault != "none")) or "-"
        lines.append(
            f"| {minute} | {last.rss_kib / 1024:.1f} | {_span(s.fds for s in group)} | "
            f"{_span(s.tasks for s in group)} | {last.probes:.0f} | {faults} |"
        )
    return "\n".join(lines) + "\n"


def _span(values: Iterable[int]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]}" if ordered[0] == ordered[-1] else f"{ordered[0]}-{ordered[-1]}"


_PROGRESS = re.compile(
    r"^t=(?P<t>[\d.]+)s rss=(?P<rss>\d+)KiB fds=(?P<fds>\d+) tasks=(?P<tasks>\d+) "
    r"probes=(?P<probes>[\d.]+) fault=(?P<fault>.+)$"
)


def progress_line(sample: Sample) -> str:
    return (
        f"t={sample.t:.0f}s rss={sample.rss_kib}KiB fds={sample.fds} tasks={sample.tasks} "
        f"probes={sample.probes:.0f} fault={sample.fault}"
    )


def samples_from_log(text: str) -> list[Sample]:
    """The samples back from a run's progress lines (to rebuild its report)."""
    found = []
    for line in text.splitlines():
        match = _PROGRESS.match(line)
        if match:
            found.append(
                Sample(
                    t=float(match["t"]),
                    rss_kib=int(match["rss"]),
                    fds=int(match["fds"]),
                    tasks=int(match["tasks"]),
                    probes=float(match["probes"]),
                    fault=match["fault"],
                )
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--fault-period", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument(
        "--from-log", type=Path, help="no new run: rebuild the report from a run's progress log"
    )
    args = parser.parse_args(argv)
    if args.from_log:
        samples = samples_from_log(args.from_log.read_text())
        command = (
            "sudo nice -n 10 .venv/bin/python -m bench.soak "
            + " ".join(
                f"--{k.replace('_', '-')} {v:g}"
                for k, v in vars(args).items()
                if k in ("duration", "sample_every", "fault_period", "warmup")
            )
            + (f" --out {args.out}" if args.out else "")
        )
    else:
        with soak_lab() as lab:
            samples = run(
                lab,
                args.duration,
                sample_every=args.sample_every,
                fault_period=args.fault_period,
                on_sample=lambda sample: print(progress_line(sample), flush=True),
            )
        command = "sudo nice -n 10 .venv/bin/python -m bench.soak " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
    text = report(samples, args.duration, args.warmup, command)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
