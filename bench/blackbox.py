"""blackbox_exporter as the reference: started on loopback with the bench modules, resolving
through the bench DNS server, and driven by a scraper at the rate our exporter probes.

blackbox resolves through /etc/resolv.conf (Go's resolver). So that it asks the bench DNS
server and never the system resolver, it runs in a private mount namespace (`unshare
--mount`, root) where a resolv.conf naming only the bench server is bind-mounted over
/etc/resolv.conf; nothing outside that process sees it.

The scraper is Prometheus's part: each target asked every `interval` at a fixed phase,
`/probe?module=...&target=...` with the scrape-timeout header, over kept-alive connections.
It records probe_success, probe_duration_seconds and the HTTP processing phase of every
answer. It runs in the harness process, whose CPU is measured apart from blackbox's.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from bench.proc import SUBJECT_NICE, RepoProcess, pinned
from bench.workload import Workload, blackbox_modules
from exporter.engine.scheduler import startup_spread

BINARY = "prometheus-blackbox-exporter"
SCRAPE_TIMEOUT = 10.0


def start(workdir: Path, listen: str, ca_file: str, resolver: str, cpus: str | None) -> RepoProcess:
    """blackbox_exporter pinned to `cpus`, resolving through `resolver` only (an IP; port 53)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "blackbox.yml"
    config.write_text(yaml.safe_dump(blackbox_modules(ca_file)))
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {resolver}\n")
    inner = (
        f"mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf && exec {BINARY} "
        f"--config.file={shlex.quote(str(config))} --web.listen-address={listen} "
        "--log.level=warn"
    )
    # taskset, unshare and sh each exec the next: the PID we hold ends up blackbox's own.
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]
    process = RepoProcess("blackbox", pinned(unshare, cpus, SUBJECT_NICE), workdir)
    process.start()
    try:
        process.wait_ready(f"http://{listen}/-/healthy")
    except BaseException:
        process.stop()
        raise
    return process


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall time the probe was asked for
    success: bool
    duration: float
    processing: float | None  # HTTP: first byte - connection ready (blackbox's phase)


def parse_probe(text: str) -> tuple[bool, float, float | None]:
    """(success, duration, processing phase) from a /probe answer (pure)."""
    success, duration, processing = False, float("nan"), None
    for line in text.splitlines():
        if line.startswith("probe_success "):
            success = float(line.split()[1]) == 1.0
        elif line.startswith("probe_duration_seconds "):
            duration = float(line.split()[1])
        elif line.startswith('probe_http_duration_seconds{phase="processing"} '):
            processing = float(line.split()[1])
    return success, duration, processing


@dataclass
class Scraper:
    """Asks blackbox for each job every interval, from `start` until `until` (wall time)."""

    base: str
    jobs: list[tuple[str, str]]
    workload: Workload
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    skipped: int = 0  # a target's previous scrape still running (Prometheus skips too)

    def offsets(self, rng: random.Random) -> list[float]:
        """burst: the phases our scheduler gives its first probes; else Prometheus's, spread
        over the whole interval."""
        spread = startup_spread(len(self.jobs)) if self.workload.burst else self.workload.interval
        return [rng.uniform(0, min(spread, self.workload.interval)) for _ in self.jobs]

    async def run(self, until: float, seed: int = 1) -> None:
        offsets = self.offsets(random.Random(seed))
        order = sorted(range(len(self.jobs)), key=offsets.__getitem__)
        busy: set[int] = set()
        tasks: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT + 1)
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            start = time.time()
            round_start = start
            while round_start < until:
                for index in order:
                    due = round_start + offsets[index]
                    if due >= until:
                        break
                    await asyncio.sleep(max(0.0, due - time.time()))
                    if index in busy:
                        self.skipped += 1
                        continue
                    busy.add(index)
                    task = asyncio.create_task(self._one(session, index, busy))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                round_start += self.workload.interval
            if tasks:
                await asyncio.wait(tasks, timeout=SCRAPE_TIMEOUT + 2)

    async def _one(self, session: aiohttp.ClientSession, index: int, busy: set[int]) -> None:
        module, target = self.jobs[index]
        at = time.time()
        try:
            async with session.get(
                f"{self.base}/probe", params={"module": module, "target": target}
            ) as response:
                text = await response.text()
            self.samples.append(Sample(at, *parse_probe(text)))
        except (aiohttp.ClientError, TimeoutError):
            self.errors += 1
        finally:
            busy.discard(index)
