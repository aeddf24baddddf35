"""The real Alertmanager for tests, and a test config derived from the shipped one.

Used by tests/alerts (routing and inhibitions) and tests/lab (end to end with Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import yaml

from tests.conftest import closed_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "alerts" / "alertmanager.yml"
if TYPE_CHECKING:
    from .webhook import WebhookReceiver

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def receiver_names(text: str) -> list[str]:
    return [receiver["name"] for receiver in yaml.safe_load(text)["receivers"]]


def top_level_blocks(text: str) -> dict[str, str]:
    """The text of each top-level key of a YAML document, byte for byte.

    Lines before the first key (the header comment) are under "". Joined in order, the
    blocks give back the text exactly.
    """
    blocks: dict[str, str] = {"": ""}
    key = ""
    for line in text.splitlines(keepends=True):
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*):", line)
        if match:
            key = match.group(1)
            assert key not in blocks, f"duplicate top-level key {key}"
            blocks[key] = ""
        blocks[key] += line
    assert "".join(blocks.values()) == text
    return blocks


def derive_test_config(text: str, urls: dict[str, str]) -> str:
    """The shipped config with every receiver's integrations replaced by one webhook.

    ``urls`` maps each receiver name to its webhook URL. Everything but the `receivers`
    block is kept byte for byte.
    """
    blocks = top_level_blocks(text)
    names = [receiver["name"] for receiver in yaml.safe_load(blocks["receivers"])["receivers"]]
    assert sorted(names) == sorted(urls), (names, sorted(urls))
    receivers = {
        "receivers": [
            {"name": name, "webhook_configs": [{"url": urls[name], "send_resolved": True}]}
            for name in names
        ]
    }
    blocks["receivers"] = yaml.safe_dump(receivers, sort_keys=False)
    return "".join(blocks.values())


def _webhook_urls(config: dict) -> list[str]:
    return sorted(
        str(hook["url"])
        for receiver in config.get("receivers") or []
        for hook in receiver.get("webhook_configs") or []
    )


class Alertmanager:
    """The real Alertmanager on 127.0.0.1, clustering off, data in a temporary directory."""

    def __init__(self, config: Path, workdir: Path) -> None:
        """`config`: a file, e.g. derive_test_config(SHIPPED.read_text(), urls) written out."""
        self.config = config
        self.workdir = workdir
        self.log_path = workdir / "alertmanager.log"
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self, session: aiohttp.ClientSession) -> None:
        assert ALERTMANAGER is not None
        for _attempt in range(3):  # the free port may be taken before Alertmanager binds it
            port = closed_port()
            self.url = f"http://127.0.0.1:{port}"
            with self.log_path.open("ab") as log:
                self.process = await asyncio.create_subprocess_exec(
                    ALERTMANAGER,
                    f"--config.file={self.config}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if await self._ready(session, timeout=15):
                if await self._answers_for_us(session):
                    return
                await self.stop()  # another Alertmanager (a parallel test's) has the port
                continue
            await self.stop()
            if "address already in use" not in self.log():
                break
        raise AssertionError(f"Alertmanager did not become ready:\n{self.log()[-3000:]}")

    async def _answers_for_us(self, session: aiohttp.ClientSession) -> bool:
        """The Alertmanager on our port runs our config (a parallel test's one that took the
        port first would answer /-/ready while ours dies on 'address already in use')."""
        async with session.get(f"{self.url}/api/v2/status") as response:
            status = await response.json()
        running = yaml.safe_load(status["config"]["original"])  # re-serialised, not our text
        return _webhook_urls(running) == _webhook_urls(yaml.safe_load(self.config.read_text()))

    async def _ready(self, session: aiohttp.ClientSession, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.1)
        return False

    async def post_alerts(self, session: aiohttp.ClientSession, alerts: list[dict]) -> None:
        """Post ``alerts`` in one request, all starting now (as Prometheus would)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        alerts = [{**a, "startsAt": now} for a in alerts]
        async with session.post(f"{self.url}/api/v2/alerts", json=alerts) as response:
            assert response.status == 200, await response.text()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.asynccontextmanager
async def shipped_alertmanager(
    workdir: Path,
) -> AsyncIterator[tuple[Alertmanager, WebhookReceiver]]:
    """The real Alertmanager on the shipped config, every receiver pointed at one local
    webhook (path = receiver name), running until the block ends."""
    from .webhook import WebhookReceiver

    async with WebhookReceiver() as hook, aiohttp.ClientSession() as session:
        text = SHIPPED.read_text()
        (workdir / "am").mkdir(parents=True)
        config = workdir / "alertmanager.yml"
        config.write_text(
            derive_test_config(text, {r: hook.url(f"/{r}") for r in receiver_names(text)})
        )
        manager = Alertmanager(config, workdir / "am")
        await manager.start(session)
        try:
            yield manager, hook
        finally:
            await manager.stop()
