#!/usr/bin/env python3
"""Write deploy/kubernetes/rules/prometheusrule.yaml from alerts/meta-outage.rules.yml.

The PrometheusRule's spec.groups is the rule file's `groups`, value for value, so the
Kubernetes rules and the alerts/ rules cannot drift: `make manifests` regenerates it, and
tests/deploy/test_kubernetes.py fails when the committed file is not what this writes.

    python3 deploy/kubernetes/generate_prometheusrule.py            # rewrite the file
    python3 deploy/kubernetes/generate_prometheusrule.py --check    # exit 1 if it is stale
    python3 deploy/kubernetes/generate_prometheusrule.py --stdout   # print it

Needs only PyYAML (a dependency of the exporter).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "meta-outage.rules.yml"
OUTPUT = ROOT / "deploy" / "kubernetes" / "rules" / "prometheusrule.yaml"
NAME = "meta-outage-exporter"

HEADER = """\
# GENERATED from alerts/meta-outage.rules.yml by deploy/kubernetes/generate_prometheusrule.py:
# do not edit; change the rule file and run `make manifests`.
#
# Apply it where the rules are evaluated over ALL vantages (a global Prometheus, Thanos Ruler,
# or synced to the Mimir ruler): a regional Prometheus that sees only its own vantage would
# page on one region's view, without the cross-vantage consensus (docs/deployment.md,
# "Kubernetes").
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as in the rule file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": NAME,
            "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "rules"},
        },
        "spec": {"groups": groups},
    }


def render(rules_text: str) -> str:
    groups = yaml.safe_load(rules_text)["groups"]
    body = yaml.dump(
        prometheus_rule(groups),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    mode.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args(argv)
    text = render(RULES.read_text())
    if args.stdout:
        sys.stdout.write(text)
    elif args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run `make manifests`", file=sys.stderr)
            return 1
    else:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
