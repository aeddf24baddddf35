"""/metrics' fast per-check rendering (exporter/web/exposition.py) is prometheus_client's, byte
for byte: the same families, samples, values and order, in the text format and in
OpenMetrics, over results of every kind (successes with phases, DNS and TLS failures, IPv6,
a check never probed, counts past a million) and across slice boundaries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.config import loader as config_module
from exporter.engine.runtime import Runtime
from exporter.model import Phase, ProbeResult, Reason
from exporter.web import exposition
from exporter.web.metrics import build_registry, check_families

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _runtime(tmp_path: Path) -> Runtime:
    checks = {
        "web": {"kind": "http", "url": "https://www.facebook.com/"},
        "dns": {"kind": "dns", "name": "facebook.com"},
        "chat": {"kind": "tcp", "host": "127.0.0.1", "port": 5222},
        "edge": {"kind": "tls", "host": "127.0.0.1"},
        "never": {"kind": "tcp", "host": "127.0.0.1", "port": 1},
    }
    raw = {
        "builtin_catalog": False,
        "dns": {"resolvers": ["127.0.0.1:53"]},
        "egress": {"allow_networks": ["127.0.0.0/8"]},
        "services": {
            "facebook": {"checks": checks},
            "whatsapp": {"checks": {"web": {"kind": "http", "url": "https://127.0.0.1/"}}},
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    runtime = Runtime(config_module.load(str(path)))
    ok = Reason.OK
    results = {
        ("facebook", "web"): [
            ProbeResult(True, ok, 0.061, 1.7e9, {p: 0.002 * (i + 1) for i, p in enumerate(Phase)},
                        http_status=200, tls_expiry=1.8e9, address_family="ipv6"),
            ProbeResult(False, Reason.HTTP_STATUS, 0.05, 1.7e9 + 15, {Phase.RESOLVE: 0.0004},
                        http_status=503, address_family="ipv4"),
        ],
        ("facebook", "dns"): [
            ProbeResult(True, ok, 0.0031, 1.7e9, {Phase.RESOLVE: 0.0031}, dns_rcode="NOERROR",
                        dns_answers=2),
            ProbeResult(False, Reason.DNS_SERVFAIL, 0.2, 1.7e9 + 1, {Phase.RESOLVE: 0.2},
                        dns_rcode="SERVFAIL"),
        ],
        ("facebook", "chat"): [
            ProbeResult(False, Reason.TCP_REFUSED, 1e-05, 1.7e9, {Phase.CONNECT: 1e-05}),
        ],
        ("facebook", "edge"): [
            ProbeResult(True, ok, 12.5, 1.7e9, {Phase.CONNECT: 2.5, Phase.TLS: 10.0},
                        tls_expiry=1.9e9, tls_version="TLSv1.3", address_family="ipv4"),
        ],
        ("whatsapp", "web"): [
            ProbeResult(False, Reason.BLOCKED_BY_POLICY, 0.0, 1.7e9),
        ],
    }  # fmt: skip
    specs = {check.key: check for check in runtime.config.checks}
    for key, probes in results.items():
        for result in probes:
            runtime.on_result(specs[key], result)
    runtime.store.records[("facebook", "edge")].probes_total = 1_234_567  # past "N.0"
    return runtime


class _Only:
    def __init__(self, families: list) -> None:  # type: ignore[type-arg]
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        return iter(self.families)


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
@pytest.mark.parametrize("slice_size", [1, 2, 100])
def test_check_families_byte_for_byte(
    tmp_path: Path, accept: str, slice_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition, "SLICE", slice_size)
    records = _runtime(tmp_path).snapshot().records
    encoder, _ = choose_encoder(accept)
    expected = encoder(_Only(list(check_families(records)))).decode()
    expected = expected.removesuffix(exposition.OPENMETRICS_EOF)
    got = "".join(exposition.check_slices(records, openmetrics=bool(accept)))
    assert got == expected
    assert "meta_probe_phase_duration_seconds_bucket" in got
    assert 'meta_probes_total{check="edge",service="facebook"} 1.234567e+06' in got


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
def test_whole_exposition_holds_every_sample_once(tmp_path: Path, accept: str) -> None:
    runtime = _runtime(tmp_path)
    snap = runtime.snapshot()
    others = build_registry(runtime.snapshot, process_metrics=False, checks=False)
    chunks, content_type = exposition.render(snap, others, accept)

    async def read() -> bytes:
        return b"".join([chunk async for chunk in chunks])

    body = asyncio.run(read())
    encoder, expected_type = choose_encoder(accept)
    assert content_type == expected_type
    full = encoder(build_registry(runtime.snapshot, process_metrics=False)).decode()
    parse = parse_om if accept else parse_text

    def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        found = set()
        for family in parse(text):
            for s in family.samples:
                if s.name != "meta_exporter_asyncio_tasks":  # differs between the two calls
                    found.add((s.name, tuple(sorted(s.labels.items())), s.value))
        return found

    text = body.decode()
    assert samples(text) == samples(full)
    if accept:
        assert text.endswith("# EOF\n") and text.count("# EOF") == 1
