"""deploy/compose/: the one-command stack, checked by the real tools without an engine.

No container engine runs here, so the stack is never started. Checked instead:
- `docker-compose config` (Debian's docker-compose 1.29, which only parses) accepts the file;
  everything else reads its resolved output, so relative paths are checked as compose
  resolves them;
- each service's bind mounts are laid out under a temp root exactly as the container would
  see them (symlinks to the mount sources), then `promtool check config` checks Prometheus's
  config there, which also loads the rule file through the mounted path, and `amtool
  check-config` checks Alertmanager's; every `*_file` secret of alertmanager.yml lies in the
  mounted secrets directory, whose README names exactly those files;
- the wiring: images pinned by tag, the exporter built from this repo's Dockerfile, the scrape
  job named as the rules expect, scrape, alerting and Grafana datasource addresses pointing at
  compose service names and their ports, retention covering the longest rule window, the
  Grafana provisioning files and dashboards mounted where the provisioning points.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ROOT, tool

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
RULES_FILE = ROOT / "alerts" / "meta-outage.rules.yml"
ALERTMANAGER_FILE = ROOT / "alerts" / "alertmanager.yml"
DASHBOARDS = ROOT / "dashboards"

APT = "Debian: apt-get install {}; scripts/install-system-deps.sh installs it"
_DURATION = re.compile(r"(\d+)([smhdwy])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def seconds(duration: str) -> int:
    return sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The stack as `docker-compose config` resolves it (paths made absolute)."""
    binary = tool("docker-compose", APT.format("docker-compose"))
    done = subprocess.run(
        [binary, "--file", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return compose["services"][name]


def bind_mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for the bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in svc.get("volumes", []):
        source, target, *_ = (
            volume.split(":")
            if isinstance(volume, str)
            else (
                volume["source"],
                volume["target"],
            )
        )
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def container_root(svc: dict[str, Any], root: Path) -> Path:
    """The service's bind mounts laid out under root, as the container sees them."""
    for target, source in bind_mounts(svc).items():
        assert source.exists(), f"mount source {source} does not exist"
        where = root / target.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(source)
    return root


def flag(svc: dict[str, Any], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in svc["command"] if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} in {svc['command']}"
    return values[0]


def published_port(svc: dict[str, Any]) -> int:
    ports = {int(p.split(":")[-1].split("/")[0]) for p in svc["ports"]}
    assert len(ports) == 1
    return ports.pop()


# -- the file ------------------------------------------------------------------------------


def test_images_are_pinned_by_tag(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_exporter_is_built_from_this_repository(compose: dict[str, Any]) -> None:
    exporter = service(compose, "exporter")
    assert Path(exporter["build"]["context"]) == ROOT
    assert (ROOT / exporter["build"].get("dockerfile", "Dockerfile")).is_file()
    config = flag(exporter, "config.file")
    assert bind_mounts(exporter)[config] == COMPOSE_DIR / "exporter.yml"
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all addresses"


def test_exporter_config_is_valid(compose: dict[str, Any]) -> None:
    """The mounted exporter.yml, as the exporter's own `validate` reads it."""
    from exporter.config import loader

    exporter = service(compose, "exporter")
    loaded = loader.load(str(bind_mounts(exporter)[flag(exporter, "config.file")]))
    assert loaded.meta_services, "the compose config must keep the built-in catalogue"


# -- Prometheus ----------------------------------------------------------------------------


def test_promtool_checks_the_config_and_mounted_rules(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    promtool = tool("promtool", APT.format("prometheus"))
    prometheus = service(compose, "prometheus")
    root = container_root(prometheus, tmp_path)
    config = root / flag(prometheus, "config.file").lstrip("/")
    done = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The rule glob found the mounted rule file, and promtool loaded every rule in it.
    rules = yaml.safe_load(RULES_FILE.read_text())
    count = sum(len(group["rules"]) for group in rules["groups"])
    assert "SUCCESS: 1 rule files found" in done.stdout, done.stdout
    assert f"rules/{RULES_FILE.name}" in done.stdout
    assert f"SUCCESS: {count} rules found" in done.stdout, done.stdout


def prometheus_config(compose: dict[str, Any]) -> dict[str, Any]:
    prometheus = service(compose, "prometheus")
    path = bind_mounts(prometheus)[flag(prometheus, "config.file")]
    return yaml.safe_load(path.read_text())


def test_scrape_job_is_named_as_the_rules_expect(compose: dict[str, Any]) -> None:
    jobs = {job["job_name"]: job for job in prometheus_config(compose)["scrape_configs"]}
    rules_text = RULES_FILE.read_text()
    expected = set(re.findall(r'up\{job="([^"]+)"\}', rules_text))
    assert expected == {"meta-outage-exporter"}
    job = jobs["meta-outage-exporter"]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    port = published_port(service(compose, "exporter"))
    assert targets == [f"exporter:{port}"]
    # instance = the vantage's name (region), as in the Kubernetes overlays.
    labels = job["static_configs"][0]["labels"]
    assert labels["region"]
    assert job["relabel_configs"] == [{"source_labels": ["region"], "target_label": "instance"}]


def test_alerts_go_to_the_compose_alertmanager(compose: dict[str, Any]) -> None:
    alerting = prometheus_config(compose)["alerting"]["alertmanagers"]
    targets = [t for am in alerting for static in am["static_configs"] for t in static["targets"]]
    assert targets == [f"alertmanager:{published_port(service(compose, 'alertmanager'))}"]


def test_retention_covers_the_longest_rule_window(compose: dict[str, Any]) -> None:
    windows = re.findall(r"\[(\d+[smhdwy])\]", RULES_FILE.read_text())
    longest = max(seconds(w) for w in windows)
    retention = seconds(flag(service(compose, "prometheus"), "storage.tsdb.retention.time"))
    assert retention > longest, f"retention {retention}s < the rules' {longest}s window"


# -- Alertmanager --------------------------------------------------------------------------


def test_amtool_checks_the_mounted_config(compose: dict[str, Any], tmp_path: Path) -> None:
    amtool = tool("amtool", APT.format("prometheus-alertmanager"))
    alertmanager = service(compose, "alertmanager")
    root = container_root(alertmanager, tmp_path)
    config = root / flag(alertmanager, "config.file").lstrip("/")
    assert config.resolve() == ALERTMANAGER_FILE
    done = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def file_fields(node: object) -> list[str]:
    """The values of every `*_file` key, at any depth."""
    if isinstance(node, dict):
        return [
            found
            for key, value in node.items()
            for found in ([value] if str(key).endswith("_file") else file_fields(value))
        ]
    if isinstance(node, list):
        return [found for item in node for found in file_fields(item)]
    return []


def test_every_secret_file_is_in_the_mounted_secrets_dir(compose: dict[str, Any]) -> None:
    secret_paths = set(file_fields(yaml.safe_load(ALERTMANAGER_FILE.read_text())))
    assert secret_paths, "alertmanager.yml reads no secret from a file?"
    mounts = bind_mounts(service(compose, "alertmanager"))
    directories = {Path(path).parent for path in secret_paths}
    assert len(directories) == 1
    secrets_dir = mounts[str(directories.pop())]
    assert secrets_dir == COMPOSE_DIR / "secrets"
    readme = (secrets_dir / "README.md").read_text()
    documented = set(re.findall(r"^\| `([\w-]+)` \|", readme, re.MULTILINE))
    assert documented == {Path(path).name for path in secret_paths}
    ignored = (secrets_dir / ".gitignore").read_text().split()
    assert "*" in ignored, "real credentials must stay out of git"


# -- Grafana -------------------------------------------------------------------------------


def test_grafana_provisioning_points_at_the_mounts(compose: dict[str, Any]) -> None:
    grafana = service(compose, "grafana")
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == DASHBOARDS / "provisioning"
    dashboards_target = "/var/lib/grafana/dashboards/meta-outage"
    assert mounts[dashboards_target] == DASHBOARDS
    assert list(DASHBOARDS.glob("*.json")), "no dashboard JSON in dashboards/"

    provisioning = DASHBOARDS / "provisioning"
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text()).get("datasources", [])
    ]
    urls = {source["url"] for source in datasources if source["type"] == "prometheus"}
    assert urls == {f"http://prometheus:{published_port(service(compose, 'prometheus'))}"}

    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text()).get("providers", [])
    ]
    assert [p["options"]["path"] for p in providers if p["type"] == "file"] == [dashboards_target]
