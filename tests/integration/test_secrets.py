"""No secret ever leaves the exporter: a Graph API token (from env and from a file) and the
basic auth password and hash appear in no log line (DEBUG, JSON), no metric, no API or page
output, no /probe answer and no error message, including config errors where the token was
pasted into the wrong key. Also: every log line is one JSON object with ts/level/logger/msg.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import yaml

from exporter.config import loader
from exporter.sim.frontend import FrontendServer
from tests.integration.exporter_process import exporter_process

TOKEN = "EAAGm0PX4ZCpsBAKZCZBlabSecretTokenQ7vX2mN9pL4kR8sT1wY6zA3bC5dE0fG7hJ2kL9mN4pQ"
TOKEN_ENV = "META_EXPORTER_TEST_SECRET_TOKEN"
PASSWORD = "hunter2-but-longer-and-secret"
WRONG_PASSWORD = "guessing-the-password-42"


def authenticated_checks(url: str, token_file: Path) -> dict[str, dict[str, object]]:
    graph = {"kind": "http", "url": url}
    return {
        "token_env": {**graph, "bearer_token_env": TOKEN_ENV},
        "token_file": {**graph, "bearer_token_file": str(token_file)},
        # Failing with the token sent: the failure detail must not carry it either.
        "token_fail": {**graph, "bearer_token_env": TOKEN_ENV, "valid_status_codes": [400]},
        "token_content": {**graph, "bearer_token_env": TOKEN_ENV, "json_expect": {"id": "1"}},
    }


@pytest.fixture
def secret_config(config_file: Path, frontend: FrontendServer, tmp_path: Path) -> Path:
    frontend.state.valid_tokens.add(TOKEN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    data = yaml.safe_load(config_file.read_text())
    url = f"https://graph.facebook.com:{frontend.port}/me"
    data["services"]["graph_auth"] = {"checks": authenticated_checks(url, token_file)}
    config_file.write_text(yaml.safe_dump(data))
    return config_file


def assert_no_secret(text: str, where: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret leaked into {where}"


def auth_header(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


async def test_no_secret_in_logs_metrics_apis_or_errors(
    secret_config: Path, tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ops: {hashed}\n")
    secrets = (TOKEN, PASSWORD, hashed, WRONG_PASSWORD)
    args = ["--config.file", str(secret_config), "--web.config.file", str(web)]
    args += ["--log.level", "debug", "--log.format", "json"]
    outputs: dict[str, str] = {}
    async with (
        exporter_process(*args, env={**os.environ, TOKEN_ENV: TOKEN}) as running,
        aiohttp.ClientSession(headers=auth_header(PASSWORD)) as http,
    ):
        for _ in range(200):
            if (await http.get(f"{running.base}/-/ready")).status == 200:
                break
            await asyncio.sleep(0.1)
        await running.wait_log("probe graph_auth/token_fail failed")
        await running.wait_log("probe graph_auth/token_content failed")
        for path in ("/metrics", "/api/v1/status", "/api/v1/history", "/"):
            outputs[path] = await (await http.get(running.base + path)).text()
        for check in authenticated_checks("", tmp_path):
            path = f"/probe?check={check}"
            outputs[path] = await (await http.get(running.base + path)).text()
        async with aiohttp.ClientSession(headers=auth_header(WRONG_PASSWORD)) as intruder:
            assert (await intruder.get(f"{running.base}/metrics")).status == 401
        # A reload with the token pasted where its variable's name belongs: rejected,
        # and neither the answer nor the log quotes it.
        data = yaml.safe_load(secret_config.read_text())
        data["services"]["graph_auth"]["checks"]["token_env"]["bearer_token_env"] = TOKEN
        secret_config.write_text(yaml.safe_dump(data))
        reload = await http.post(f"{running.base}/-/reload")
        outputs["/-/reload"] = await reload.text()
        assert reload.status == 500 and "bearer_token_env" in outputs["/-/reload"]
        running.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running.process.wait(), 15) == 0
        await running.stop()
    status = json.loads(outputs["/api/v1/status"])
    checks = {
        c["name"]: c for s in status["services"] for c in s["checks"] if s["name"] == "graph_auth"
    }
    assert checks["token_env"]["last_result"]["success"] is True  # the token was sent and used
    assert checks["token_file"]["last_result"]["success"] is True
    assert checks["token_fail"]["last_result"]["reason"] == "http_status"
    assert checks["token_content"]["last_result"]["reason"] == "content_mismatch"
    for where, text in outputs.items():
        assert_no_secret(text, where, secrets)
    assert_no_secret(running.log, "the log", secrets)
    # Structured logs: one JSON object per line, DEBUG included.
    records = [json.loads(line) for line in running.lines]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert {"debug", "info", "error"} <= {r["level"] for r in records}


def parse_errors(text: str) -> str:
    with pytest.raises(loader.ConfigError) as caught:
        loader.parse(text, "bad.yml")
    return str(caught.value)


@pytest.mark.parametrize(
    "check",
    [
        {"bearer_token_env": TOKEN},  # the token itself instead of its variable's name
        {"bearer_token_file": TOKEN},  # ... or instead of its file's path
        {"headers": [f"Authorization: Bearer {TOKEN}"]},  # headers as a list, not a mapping
        {"headers": {"Authorization": f"Bearer {TOKEN}"}, "timeot": "1s"},  # error elsewhere
        {"bearer_token": TOKEN},  # a key that does not exist
        {"bearer_token_env": {"value": TOKEN}},  # a mapping where a name belongs
    ],
)
def test_config_errors_never_quote_the_token(check: dict[str, object]) -> None:
    document = {
        "builtin_catalog": False,
        "services": {
            "api": {"checks": {"me": {"kind": "http", "url": "https://x.test/", **check}}}
        },
    }
    message = parse_errors(yaml.safe_dump(document))
    assert "bad.yml:" in message
    assert TOKEN not in message and TOKEN[:20] not in message, message
