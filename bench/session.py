"""One measured session: one subject (our exporter or blackbox_exporter) doing one workload
against the bench servers, with its CPU, memory, probe count and probe timings over a
fixed window after a warm-up. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from bench import blackbox, procstat
from bench.proc import SERVER_NICE, SUBJECT_NICE, RepoProcess, pinned, python_module
from bench.workload import Targets, Workload, blackbox_jobs, exporter_config, https_url
from tests.conftest import closed_port


def dns_host() -> str:
    """A loopback address of our own for the DNS server: blackbox can only be told a resolver
    on port 53, and another run (a test, a second suite) may hold one already."""
    return f"127.77.{random.randrange(256)}.{random.randrange(1, 255)}"


PROMETHEUS_SCRAPE = 15.0  # ours is scraped like this while it runs (its collector costs)
# What Prometheus 2.42 asks for: OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
READY_TIMEOUT = 120.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class Servers:
    """The bench servers, one process per role, on their own CPU, reniced."""

    processes: dict[str, RepoProcess]
    targets: Targets

    def cpu(self) -> dict[str, float]:
        return {role: procstat.usage(p.pid).cpu for role, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def stats(self) -> dict[str, dict]:
        out = {}
        for role, process in self.processes.items():
            path = process.workdir / f"{role}-stats.json"
            out[role] = json.loads(path.read_text()) if path.exists() else {}
        return out


def start_servers(workdir: Path, cpus: str | None, nice: int = SERVER_NICE) -> Servers:
    ca_dir = workdir / "ca"
    ports = {"https": closed_port(), "edge": closed_port(), "tcp": closed_port(), "dns": 53}
    hosts = {"https": "127.0.0.1", "edge": "127.0.0.1", "tcp": "127.0.0.1", "dns": dns_host()}
    processes: dict[str, RepoProcess] = {}
    try:
        for role in ("https", "edge", "tcp", "dns"):
            argv = python_module(
                "bench.servers",
                "--role",
                role,
                "--listen",
                f"{hosts[role]}:{ports[role]}",
                "--ca-dir",
                str(ca_dir),
                "--stats",
                str(workdir / "servers" / f"{role}-stats.json"),
            )
            process = RepoProcess(role, pinned(argv, cpus, nice), workdir / "servers")
            process.start()
            processes[role] = process
            _wait_listening(process)  # one by one: the https role makes the CA first
    except BaseException:
        for process in processes.values():
            process.stop()
        raise
    targets = Targets(
        https_port=ports["https"],
        edge_port=ports["edge"],
        tcp_port=ports["tcp"],
        dns_host=hosts["dns"],
        dns_port=53,
        ca_file=str(ca_dir / "lab-ca.pem"),
    )
    return Servers(processes, targets)


def _wait_listening(process: RepoProcess, timeout: float = 30.0) -> None:
    log = process.workdir / f"{process.name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.process is not None
        if process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        if log.exists() and '"port"' in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} not listening after {timeout}s:\n{process.log_tail()}")


@dataclass
class Session:
    subject: str  # "ours" | "blackbox"
    workload: Workload
    window: float = 0.0
    probes: int = 0
    failed: int = 0
    cpu: float = 0.0  # subject CPU seconds over the window
    cpu_system: float = 0.0  # the kernel's part of it
    hwm_kib: int = 0
    rss_kib: int = 0
    server_cpu: dict[str, float] = field(default_factory=dict)
    harness_cpu: float = 0.0
    durations: list[float] = field(default_factory=list)  # probes started in the window
    processing: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # ours: scheduler lag in the window
    gc_pauses: list[tuple[int, float]] = field(default_factory=list)  # ours: (generation, s)
    skipped: int = 0  # blackbox: scrapes skipped because the last one still ran
    metrics_render: list[float] = field(default_factory=list)  # ours: GET /metrics seconds
    metrics_bytes: int = 0
    last_error: str | None = None  # floors: what the last failed probe said

    @property
    def cpu_per_1000(self) -> float | None:
        return self.cpu / self.probes * 1000 if self.probes else None

    @property
    def core_share(self) -> float:
        return self.cpu / self.window if self.window else 0.0

    def errors(self, which: str = "processing") -> list[float]:
        """Measured minus injected delay, in seconds."""
        delay = self.workload.delay_ms / 1000
        values = self.processing if which == "processing" else self.durations
        return [v - delay for v in values]


class Window:
    """CPU of the subject, the servers and this harness between open() and close()."""

    def __init__(self, pid: int, servers: Servers) -> None:
        self.pid, self.servers = pid, servers

    def open(self) -> None:
        self.start = time.time()
        self.usage0 = procstat.usage(self.pid)
        self.servers0 = self.servers.cpu()
        self.harness0 = procstat.own_cpu()

    def close(self, session: Session) -> None:
        self.end = time.time()
        usage = procstat.usage(self.pid)
        servers = self.servers.cpu()
        session.window = self.end - self.start
        session.cpu = usage.cpu - self.usage0.cpu
        session.cpu_system = usage.system - self.usage0.system
        session.rss_kib = usage.rss_kib
        session.server_cpu = {k: servers[k] - self.servers0[k] for k in servers}
        session.harness_cpu = procstat.own_cpu() - self.harness0

    def holds(self, at: float) -> bool:
        return self.start <= at <= self.end


async def _get(
    session: aiohttp.ClientSession, url: str, accept: str = "*/*"
) -> tuple[int, str, float]:
    started = time.perf_counter()
    async with session.get(url, headers={"Accept": accept}) as response:
        text = await response.text()
    return response.status, text, time.perf_counter() - started


async def _wait_ours_ready(http: aiohttp.ClientSession, base: str, process: RepoProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert process.process is not None
        if process.process.poll() is not None:
            raise RuntimeError(f"exporter exited:\n{process.log_tail()}")
        try:
            status, _, _ = await _get(http, f"{base}/-/ready")
            if status == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"exporter not ready after {READY_TIMEOUT}s:\n{process.log_tail()}")


class Subject:
    """One exporter under test: start() until ready, drive() its probing, one window, then
    halt() (always: it stops the process) and results() (only after a complete window)."""

    session: Session
    pid: int
    window: Window | None = None
    closed = False

    async def start(self) -> None:
        raise NotImplementedError

    def drive(self, seconds: float) -> None:
        """Probing is under way for at least `seconds` from now (warm-up and window)."""

    def open(self) -> None:
        self.window = Window(self.pid, self.servers)  # type: ignore[attr-defined]
        self.window.open()

    def close(self) -> None:
        assert self.window is not None
        self.window.close(self.session)
        self.closed = True

    async def after_window(self) -> None:
        """Measurements taken once the window closed (ours: /metrics at this size)."""

    async def halt(self) -> None:
        """Stop everything started, whatever state it is in; read the peak RSS first."""
        raise NotImplementedError

    def results(self) -> Session:
        raise NotImplementedError


def _peak_rss(process: RepoProcess | None) -> int:
    if process is None or process.process is None or process.process.poll() is not None:
        return 0
    return procstat.usage(process.process.pid).hwm_kib


class Ours(Subject):
    def __init__(
        self,
        workdir: Path,
        workload: Workload,
        servers: Servers,
        *,
        cpus: str | None,
        render_samples: int = 0,
        tree: Path | None = None,
        subject: str = "ours",
    ) -> None:
        self.workdir, self.servers, self.render_samples = workdir, servers, render_samples
        self.session = Session(subject, workload)
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "exporter.yml"
        config.write_text(yaml.safe_dump(exporter_config(workload, servers.targets)))
        port = closed_port()
        self.base = f"http://127.0.0.1:{port}"
        self.tap = workdir / "tap.json"
        argv = python_module(
            "bench.tap",
            str(self.tap),
            "run",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        )
        self.process = RepoProcess("exporter", pinned(argv, cpus, SUBJECT_NICE), workdir, tree=tree)
        self.scraping: asyncio.Task[None] | None = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
        self.process.start()
        self.pid = self.process.pid
        await _wait_ours_ready(self.http, self.base, self.process)

    def open(self) -> None:
        super().open()
        assert self.http is not None
        # Mid-interval phase: a window of k scrape intervals holds exactly k scrapes.
        self.scraping = asyncio.create_task(
            _scrape_every(self.http, f"{self.base}/metrics", first=PROMETHEUS_SCRAPE / 2)
        )

    def close(self) -> None:
        super().close()
        if self.scraping is not None:
            self.scraping.cancel()

    async def after_window(self) -> None:
        assert self.http is not None
        for _ in range(self.render_samples):  # the collector at this size, probes running
            _, text, seconds = await _get(self.http, f"{self.base}/metrics", PROMETHEUS_ACCEPT)
            self.session.metrics_render.append(seconds)
            self.session.metrics_bytes = len(text.encode())

    async def halt(self) -> None:
        try:
            self.session.hwm_kib = _peak_rss(self.process)
            if self.scraping is not None:
                self.scraping.cancel()
        finally:
            self.process.stop()  # the tap writes its record as the exporter exits
            if self.http is not None:
                await self.http.close()

    def results(self) -> Session:
        session, window = self.session, self.window
        assert window is not None
        record = json.loads(self.tap.read_text())
        for at, duration, processing in zip(
            record["started_at"], record["duration"], record["processing"], strict=True
        ):
            if window.holds(at):
                session.durations.append(duration)
                if processing is not None:
                    session.processing.append(processing)
        session.probes = len(session.durations)
        session.failed = record["failed"]
        session.lags = [
            lag for at, lag in zip(record["lag_at"], record["lag"], strict=True) if window.holds(at)
        ]
        session.gc_pauses = [
            (generation, pause)
            for at, pause, generation in zip(
                record["gc_at"], record["gc_pause"], record["gc_generation"], strict=True
            )
            if window.holds(at)
        ]
        return session


class Blackbox(Subject):
    def __init__(
        self, workdir: Path, workload: Workload, servers: Servers, *, cpus: str | None
    ) -> None:
        self.workdir, self.servers, self.cpus = workdir, servers, cpus
        self.session = Session("blackbox", workload)
        self.listen = f"127.0.0.1:{closed_port()}"
        self.driving: asyncio.Task[None] | None = None
        self.process: RepoProcess | None = None
        jobs = blackbox_jobs(workload, servers.targets)
        self.scraper = blackbox.Scraper(f"http://{self.listen}", jobs, workload)

    async def start(self) -> None:
        targets = self.servers.targets
        # Not in a thread: a cancelled start must not leave a blackbox nobody stops.
        self.process = blackbox.start(
            self.workdir, self.listen, targets.ca_file, targets.dns_host, self.cpus
        )
        self.pid = self.process.pid

    def drive(self, seconds: float) -> None:
        self.driving = asyncio.create_task(self.scraper.run(time.time() + seconds))

    async def halt(self) -> None:
        try:
            if self.driving is not None and self.closed:
                await asyncio.wait_for(self.driving, timeout=60)  # answers still on the way
            self.session.hwm_kib = _peak_rss(self.process)
        finally:
            if self.driving is not None:
                self.driving.cancel()
            if self.process is not None:
                self.process.stop()

    def results(self) -> Session:
        session, window = self.session, self.window
        assert window is not None
        inside = [s for s in self.scraper.samples if window.holds(s.at)]
        session.probes = len(inside)
        session.failed = sum(1 for s in self.scraper.samples if not s.success)
        session.failed += self.scraper.errors
        session.skipped = self.scraper.skipped
        session.durations = [s.duration for s in inside if not math.isnan(s.duration)]
        session.processing = [s.processing for s in inside if s.processing is not None]
        return session


class Floor(Subject):
    """The bare exchange (bench/floor.py) at the workload's rate: what the TLS library and the
    kernel cost with no exporter around them. Started by drive(): it runs for a set time."""

    def __init__(
        self,
        workdir: Path,
        workload: Workload,
        servers: Servers,
        *,
        engine: str,
        cpus: str | None,
    ) -> None:
        self.workdir, self.workload, self.servers = workdir, workload, servers
        self.engine, self.cpus = engine, cpus
        self.session = Session(f"floor_{engine}", workload)
        self.record = workdir / "floor.json"
        self.process: RepoProcess | None = None

    async def start(self) -> None:
        """Nothing to wait for: the loop starts probing as drive() starts it."""

    def drive(self, seconds: float) -> None:
        targets = self.servers.targets
        argv = python_module(
            "bench.floor",
            f"--engine={self.engine}",
            f"--kind={self.workload.kind}",
            f"--url={https_url(targets, self.workload, 0)}",
            f"--dns={targets.dns_host}:{targets.dns_port}",
            f"--ca-file={targets.ca_file}",
            f"--rate={self.workload.rate}",
            f"--seconds={seconds}",
            f"--record={self.record}",
        )
        self.process = RepoProcess("floor", pinned(argv, self.cpus, SUBJECT_NICE), self.workdir)
        self.process.start()
        self.pid = self.process.pid

    async def halt(self) -> None:
        try:
            self.session.hwm_kib = _peak_rss(self.process)
        finally:
            if self.process is not None:
                self.process.stop()  # SIGTERM: the loop writes its record

    def results(self) -> Session:
        session, window = self.session, self.window
        assert window is not None
        record = json.loads(self.record.read_text())
        session.probes = sum(1 for at in record["started_at"] if window.holds(at))
        session.failed = record["failed"]
        session.last_error = record["last_error"]
        return session


async def measure(subjects: list[Subject], warmup: float, window: float) -> list[Session]:
    """Start every subject, warm up, then one window over all of them at once (side by side:
    the same seconds of the same machine), then stop them all, whatever happened."""
    started: list[Subject] = []
    try:
        for subject in subjects:
            started.append(subject)
            await subject.start()
        for subject in subjects:
            subject.drive(warmup + window + 0.5)
        await asyncio.sleep(warmup)
        for subject in subjects:
            subject.open()
        await asyncio.sleep(window)
        for subject in subjects:
            subject.close()
        for subject in subjects:
            await subject.after_window()
    finally:
        for subject in started:  # each one, even if another fails or we are cancelled
            with contextlib.suppress(BaseException):
                await subject.halt()
    return [subject.results() for subject in subjects]


async def _scrape_every(http: aiohttp.ClientSession, url: str, first: float) -> None:
    """Prometheus's share of the work: a scrape every PROMETHEUS_SCRAPE seconds."""
    await asyncio.sleep(first)
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            await _get(http, url, PROMETHEUS_ACCEPT)
        await asyncio.sleep(PROMETHEUS_SCRAPE)
