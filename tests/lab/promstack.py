"""Real Prometheus and Alertmanager processes for the end-to-end alerting tests.

Debian's `prometheus` (2.42) and `prometheus-alertmanager` (0.25), started on loopback with
temp dirs, killed by the PID we started. Prometheus scrapes the lab's exporters over their
management links; regional servers remote-write into a global one that evaluates the
shipped rules, the way users run it with Thanos or Mimir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import closed_port

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
                return self
            except RuntimeError:
                self.process.stop()
                if (
                    "address already in use" not in self.process.log_tail()
                    or attempt == attempts - 1
                ):
                    raise
                self._use_port(closed_port())
        return self

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
