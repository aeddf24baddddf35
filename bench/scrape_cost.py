"""What scraping the exporter every 5 s costs Prometheus, for the built-in catalogue.

    sudo .venv/bin/python -m bench.scrape_cost

The outage lab's exporter (the built-in catalogue, every check answered by the lab's fake
Meta) scraped by a real Prometheus with the shipped rules, at 5 s and at 15 s side by side
(two servers, the same target), for a few minutes. Reported: series per scrape, samples
appended per second (scrape and rules), /metrics bytes (plain and gzip, as Prometheus asks
for it), scrape duration, and the rule groups' evaluation time.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.lab.promstack import Prometheus
from tests.lab.topology import Lab

INTERVALS = ("5s", "15s")


def metrics_bytes(url: str) -> tuple[int, int]:
    request = urllib.request.Request(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        compressed = response.headers.get("Content-Encoding") == "gzip"
    plain = gzip.decompress(body) if compressed else body
    return len(plain), len(body) if compressed else len(gzip.compress(body))


def own_metrics(prometheus: Prometheus) -> dict[str, float]:
    """Prometheus's own /metrics (no self-scrape here): name{labels} -> value, summed by
    name for the few families read below."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def scalar(prometheus: Prometheus, expr: str) -> float:
    rows = prometheus.query(expr)
    return float(rows[0]["value"][1]) if rows else float("nan")


def measure(seconds: float, workdir: Path) -> list[str]:
    lab = Lab().up()
    servers: dict[str, Prometheus] = {}
    try:
        target = lab.vantages[0].exporter_url.removeprefix("http://")
        for interval in INTERVALS:
            servers[interval] = Prometheus(
                f"prometheus-{interval}",
                workdir / interval,
                targets=[target],
                rules=True,
                scrape_interval=interval,
                evaluation_interval="15s",
            ).start()
        time.sleep(seconds / 2)
        before = {i: (time.monotonic(), own_metrics(p)) for i, p in servers.items()}
        time.sleep(seconds / 2)
        after = {i: (time.monotonic(), own_metrics(p)) for i, p in servers.items()}
        sizes = [metrics_bytes(lab.vantages[0].exporter_url) for _ in range(5)]
        plain = statistics.median(s[0] for s in sizes)
        packed = statistics.median(s[1] for s in sizes)
        window = f"[{int(seconds / 2)}s]"
        lines = [
            "| scrape interval | series per scrape | samples/s appended (scrape + rules) "
            "| head series | scrape duration ms (median) | rule groups' evaluation ms |",
            "|---|---|---|---|---|---|",
        ]
        for interval, server in servers.items():
            series = scalar(server, 'scrape_samples_scraped{job="meta-outage-exporter"}')
            (t0, m0), (t1, m1) = before[interval], after[interval]
            appended_total = "prometheus_tsdb_head_samples_appended_total"
            appended = (m1[appended_total] - m0[appended_total]) / (t1 - t0)
            head = m1["prometheus_tsdb_head_series"]
            scrape = 'scrape_duration_seconds{job="meta-outage-exporter"}'
            duration = scalar(server, f"quantile_over_time(0.5, {scrape}{window})")
            rules = m1["prometheus_rule_group_last_duration_seconds"]
            lines.append(
                f"| {interval} | {series:.0f} | {appended:.0f} | {head:.0f} "
                f"| {duration * 1000:.1f} | {rules * 1000:.1f} |"
            )
        lines += [
            "",
            f"/metrics: {plain / 1024:.0f} KiB plain, {packed / 1024:.0f} KiB gzip (median of 5).",
        ]
        return lines
    finally:
        for server in servers.values():
            server.stop()
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scrape-cost-") as workdir:
        print("\n".join(measure(args.seconds, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
