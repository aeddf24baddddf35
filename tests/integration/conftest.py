"""Fixtures for the exporter's own integration tests (shared servers are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.sim.dnsserver import DnsServer
from exporter.sim.frontend import FrontendServer
from tests.integration.fake_meta import fake_meta_config


@pytest.fixture
def config_file(
    tmp_path: Path, dns_server: DnsServer, frontend: FrontendServer, ca_file: Path
) -> Path:
    path = tmp_path / "exporter.yml"
    path.write_text(fake_meta_config(dns_server.port, frontend.port, ca_file))
    return path
