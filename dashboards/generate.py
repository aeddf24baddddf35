"""Write the Grafana dashboards (dashboards/*.json) from their definitions. Stdlib only.

    python -m dashboards.generate          # or: make dashboards
    python -m dashboards.generate --check  # exit 1 if a committed file differs

Deterministic: sorted keys, two-space indent, trailing newline; tests/dashboards holds the
committed files equal to this output byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python dashboards/generate.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards import exporter_health, overview, service, slo

DIRECTORY = Path(__file__).resolve().parent

# file name -> builder; the uids are stable (links between dashboards use them).
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview.json": overview.build,
    "service.json": service.build,
    "slo.json": slo.build,
    "exporter.json": exporter_health.build,
}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=DIRECTORY, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
