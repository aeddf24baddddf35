"""Real Prometheus and Alertmanager processes for the end-to-end alerting tests.

Debian's `prometheus` (2.42) and `prometheus-alertmanager` (0.25), started on loopback with
temp dirs, killed by the PID we started. Prometheus scrapes the lab's exporters over their
management links; regional servers remote-write into a global one that evaluates the
shipped rules, the way users run it with Thanos or Mimir. `alerting_stack` builds either
shape (tests/lab/test_alerting.py, tests/lab/test_transitions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from exporter.config.loader import load as load_config
from tests.conftest import closed_port
from tests.support.alertmanager import Alertmanager, shipped_alertmanager
from tests.support.webhook import Notification, WebhookReceiver

if TYPE_CHECKING:
    from .topology import Lab

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "meta-outage.rules.yml"


def missing_binaries() -> str | None:
    """Why the alerting end-to-end tests cannot run here, or None."""
    for binary in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(binary) is None:
            return (
                f"`{binary}` is not installed (Debian packages prometheus, prometheus-alertmanager)"
            )
    return None


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Process:
    """A server process we started: its log in the work dir, stopped by its PID."""

    name: str
    argv: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.name}.log", "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=log, cwd=self.workdir)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"{self.name}.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")


class Prometheus:
    """One Prometheus server: scrapes `targets`, optionally evaluates the shipped rules and
    alerts an Alertmanager, optionally remote-writes elsewhere or receives remote writes."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        targets: list[str] = (),  # type: ignore[assignment]
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        external_labels: dict[str, str] | None = None,
        alertmanager: str | None = None,
        rules: bool = False,
        remote_write_to: str | None = None,
        receive_remote_write: bool = False,
    ) -> None:
        self.port = closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": scrape_interval,
                "evaluation_interval": evaluation_interval,
                "external_labels": external_labels or {},
            },
            "scrape_configs": [],
        }
        if targets:
            config["scrape_configs"].append(
                {
                    "job_name": "meta-outage-exporter",
                    "scrape_timeout": scrape_interval,
                    "static_configs": [{"targets": targets}],
                }
            )
        if rules:
            config["rule_files"] = [str(RULES)]
        if alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        if remote_write_to:
            # Small batches, sent at once: the global server must see samples within a second.
            config["remote_write"] = [
                {
                    "url": f"{remote_write_to}/api/v1/write",
                    "queue_config": {"batch_send_deadline": "500ms", "max_samples_per_send": 2000},
                }
            ]
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if receive_remote_write:
            argv.append("--web.enable-remote-write-receiver")
        self.process = Process(name, argv, workdir)

    def start(self, attempts: int = 3) -> Prometheus:
        """Start; a port taken between choosing and binding it gets a new one."""
        for attempt in range(attempts):
            self.process.start()
            try:
                self.process.wait_ready(f"{self.url}/-/ready")
            except RuntimeError:
                self.process.stop()
                if (
                    "address already in use" not in self.process.log_tail()
                    or attempt == attempts - 1
                ):
                    raise
            else:
                if self._answers_for_us():
                    return self
                self.process.stop()
                if attempt == attempts - 1:
                    raise RuntimeError(f"{self.process.name}: port {self.port} taken")
            self._use_port(closed_port())
        return self

    def _answers_for_us(self) -> bool:
        """The server on our port is ours: another Prometheus (a parallel test's) that took
        the port first would answer /-/ready while ours dies on 'address already in use'."""
        flags = _get_json(f"{self.url}/api/v1/status/flags")["data"]
        return flags.get("config.file") == str(self.workdir / "prometheus.yml")

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process.argv = [
            a for a in self.process.argv if not a.startswith("--web.listen-address")
        ]
        self.process.argv.append(f"--web.listen-address=127.0.0.1:{port}")

    def stop(self) -> None:
        self.process.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        document = _get_json(url)
        assert document["status"] == "success", document
        return document["data"]["result"]

    def api(self, path: str, params: dict[str, str]) -> Any:
        """GET /api/v1/<path>: its data, or an AssertionError with Prometheus's own error."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            document = _get_json(url, timeout=30)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path} {params}: {error.read().decode()}") from None
        assert document["status"] == "success", document
        return document["data"]

    def targets_up(self) -> int:
        return len(self.query('up{job="meta-outage-exporter"} == 1'))

    def firing(self) -> set[str]:
        document = _get_json(f"{self.url}/api/v1/alerts")
        return {
            a["labels"]["alertname"] for a in document["data"]["alerts"] if a["state"] == "firing"
        }

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (pending and firing) of this evaluator."""
        return _get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]


# -- the alerting stack: Alertmanager, webhook and one or more Prometheus ---------------------

META_SERVICES = len(load_config(None).meta_services)  # the built-in catalogue's
# How long "no page" is watched: past the longest critical `for:` (MetaSLOBurnRateFast, 2m)
# plus the pager's group_wait, so every page that could follow really had its chance.
QUIET_SECONDS = 150


@dataclass
class Stack:
    hook: WebhookReceiver
    alertmanager: Alertmanager
    evaluator: Prometheus  # the one that evaluates rules and alerts
    servers: list[Prometheus]

    def pages(self) -> list[Notification]:
        return self.hook.received(receiver="pager")

    def page_groups(self, status: str = "firing") -> set[tuple[tuple[str, str], ...]]:
        return {tuple(sorted(n.group_labels.items())) for n in self.pages() if n.status == status}


@contextlib.asynccontextmanager
async def alerting_stack(
    lab: Lab, workdir: Path, *, regions: int, interval: str = "1s"
) -> AsyncIterator[Stack]:
    """regions=1: one Prometheus scraping vantage 0 and evaluating the rules.
    regions=N: one Prometheus per vantage, remote-writing into a global evaluator.
    `interval`: every server's scrape and evaluation interval."""
    timing = {"scrape_interval": interval, "evaluation_interval": interval}
    async with shipped_alertmanager(workdir) as (manager, hook):
        address = manager.url.removeprefix("http://")
        servers: list[Prometheus] = []
        try:
            if regions == 1:
                target = lab.vantages[0].exporter_url.removeprefix("http://")
                evaluator = Prometheus(
                    "prometheus",
                    workdir / "prom",
                    targets=[target],
                    rules=True,
                    alertmanager=address,
                    **timing,
                )
                servers.append(evaluator)
            else:
                evaluator = Prometheus(
                    "global",
                    workdir / "global",
                    rules=True,
                    alertmanager=address,
                    receive_remote_write=True,
                    **timing,
                )
                servers.append(evaluator)
                for vantage in lab.vantages[:regions]:
                    servers.append(
                        Prometheus(
                            f"region-{vantage.index}",
                            workdir / f"region{vantage.index}",
                            targets=[vantage.exporter_url.removeprefix("http://")],
                            external_labels={"region": f"r{vantage.index}"},
                            remote_write_to=evaluator.url,
                            **timing,
                        )
                    )
            for server in servers:
                await asyncio.to_thread(server.start)
            await wait_async(
                lambda: len(evaluator.query('up{job="meta-outage-exporter"} == 1')) == regions,
                30,
                "every exporter scraped",
            )
            # Healthy first: every service up in every vantage, nothing firing.
            await wait_async(
                lambda: all_up(evaluator, regions),
                40,
                "all services up in Prometheus",
                lambda: not_up(evaluator),
            )
            yield Stack(hook, manager, evaluator, servers)
        finally:
            for server in servers:
                await asyncio.to_thread(server.stop)


def all_up(prometheus: Prometheus, regions: int) -> bool:
    up = prometheus.query('meta_service_status{status="up"} == 1')
    return len(up) == META_SERVICES * regions


def not_up(prometheus: Prometheus) -> str:
    """Which services Prometheus holds in another status than up, and where."""
    found = prometheus.query('meta_service_status{status!="up"} == 1')
    return (
        "; ".join(
            sorted(
                " ".join(f"{k}={v}" for k, v in sorted(s["metric"].items()) if k != "__name__")
                for s in found
            )
        )
        or "none (a series missing: not every vantage scraped yet)"
    )


async def wait_async(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    describe: Callable[[], str] | None = None,
) -> float:
    """Poll `predicate` (in a thread: it may block on HTTP) until it holds; the seconds it
    took. Fails the test after `timeout`, with what `describe` says of the state then."""
    start = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - start > timeout:
            found = "" if describe is None else f": {await asyncio.to_thread(describe)}"
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{found}")
        await asyncio.sleep(0.25)
    return time.monotonic() - start
