"""Grafana dashboards for meta-outage-exporter, generated as code (see generate.py)."""
