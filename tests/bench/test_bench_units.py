"""The benchmark harness's pure parts (bench/): the workload both exporters get, parsing
blackbox's answers and /proc, the scale search, the fake server's delay; no processes."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.rrset
import pytest
import yaml

from bench.blackbox import parse_probe
from bench.floor import ENGINE_KINDS, a_query, complete, first_a
from bench.procstat import parse_stat_cpu, parse_status_kib
from bench.servers import delay_of
from bench.stats import percentile, ratio
from bench.suite import next_scale_size
from bench.workload import (
    CHECKS_PER_SERVICE,
    FLOORS,
    KINDS,
    SUBJECTS,
    Targets,
    Workload,
    blackbox_jobs,
    blackbox_modules,
    exporter_config,
)
from exporter.config import loader
from exporter.egress import EgressPolicy

TARGETS = Targets(8443, 8444, "127.77.0.53", 53, "/nonexistent/lab-ca.pem", edge_port=8445)


@pytest.mark.parametrize("kind", KINDS)
def test_workload_is_a_valid_loopback_only_config(kind: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")  # the config checks the bundle is readable, not what it holds
    targets = Targets(8443, 8444, "127.77.0.53", 53, str(ca))
    workload = Workload(kind, 25, 2.0, delay_ms=50)
    path = tmp_path / "bench.yml"
    path.write_text(yaml.safe_dump(exporter_config(workload, targets)))
    loaded = loader.load(str(path))
    assert len(loaded.checks) == 25
    assert max(len(s.checks) for s in loaded.services) == CHECKS_PER_SERVICE
    assert not loaded.meta_services[0].dns_prefixes  # nothing of the built-in catalogue
    assert loaded.egress == EgressPolicy.from_strings(["127.0.0.0/8"])
    assert [(r.host, r.port) for r in loaded.resolvers] == [("127.77.0.53", 53)]
    assert {c.interval for c in loaded.checks} == {2.0}


def test_blackbox_gets_the_same_probes() -> None:
    workload = Workload("https", 3, 1.0, delay_ms=200)
    jobs = blackbox_jobs(workload, TARGETS)
    ours = exporter_config(workload, TARGETS)["services"]["s0000"]["checks"]
    assert [target for _, target in jobs] == [c["url"] for c in ours.values()]
    assert jobs[0] == ("http_2xx", "https://www.bench.lab:8443/d/200?c=0")
    assert blackbox_jobs(Workload("dns", 2, 1.0), TARGETS) == [("dns_a", "127.77.0.53:53")] * 2
    h2 = Workload("h2", 2, 1.0)
    h2_checks = exporter_config(h2, TARGETS)["services"]["s0000"]["checks"]
    assert [t for _, t in blackbox_jobs(h2, TARGETS)] == [c["url"] for c in h2_checks.values()]
    assert {c["http_version"] for c in h2_checks.values()} == {"2"}
    assert {c["url"].split("/")[2] for c in h2_checks.values()} == {"www.bench.lab:8445"}
    modules = blackbox_modules("/ca.pem")["modules"]
    assert modules["http_2xx"]["http"]["tls_config"] == {"ca_file": "/ca.pem"}
    assert modules["http_2xx_h2"]["http"]["enable_http2"] is True
    for module in modules.values():  # one A lookup, as ours with ip_family ip4
        assert module[module["prober"]]["ip_protocol_fallback"] is False


def test_parse_probe() -> None:
    text = (
        "# HELP probe_success Displays whether or not the probe was a success\n"
        'probe_http_duration_seconds{phase="connect"} 0.0001\n'
        'probe_http_duration_seconds{phase="processing"} 0.0512\n'
        "probe_duration_seconds 0.055285508\n"
        "probe_success 1\n"
    )
    assert parse_probe(text) == (True, 0.055285508, 0.0512)
    success, duration, processing = parse_probe("probe_success 0\n")
    assert (success, processing) == (False, None) and duration != duration  # nan


def test_proc_parsing() -> None:
    # A process name may hold spaces and parentheses: fields count from the last ')'.
    stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0"
    assert parse_stat_cpu(stat) == pytest.approx((2.5, 0.75))
    assert parse_status_kib("Name:\tx\nVmHWM:\t  5120 kB\nVmRSS:\t 4096 kB\n", "VmHWM") == 5120


@pytest.mark.parametrize(
    ("line", "seconds"),
    [
        (b"GET /d/50?c=3 HTTP/1.1", 0.05),
        (b"GET /d/200 HTTP/1.1", 0.2),
        (b"GET / HTTP/1.1", 0.0),
        (b"GET /d/x HTTP/1.1", 0.0),
        (b"GET /d/99999999 HTTP/1.1", 10.0),
        (b"garbage", 0.0),
    ],
)
def test_server_delay_from_the_path(line: bytes, seconds: float) -> None:
    assert delay_of(line) == seconds


def test_scale_search() -> None:
    assert next_scale_size(2000, None) == 3000  # passing: up by half
    assert next_scale_size(None, 2000) == 1300  # failing: down by a third
    assert next_scale_size(2000, 3000) == 2500  # then halve the gap
    assert next_scale_size(2500, 2700) is None  # within 10 %: done
    assert next_scale_size(None, 100) is None  # nothing smaller to try


def test_stats() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None
    assert ratio(1.0, 2.0) == 0.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def _answer(query: bytes, *records: tuple[str, str, str], rcode: int = 0) -> bytes:
    request = dns.message.from_wire(query)
    answer = dns.message.make_response(request)
    answer.set_rcode(rcode)
    for name, rdtype, text in records:
        answer.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, text))
    return answer.to_wire()


def test_floor_lookup_reads_the_first_a_record_after_a_cname() -> None:
    query = a_query("www.bench.lab", 4242)
    parsed = dns.message.from_wire(query)  # a query dnspython reads as ours
    assert (parsed.id, str(parsed.question[0])) == (4242, "www.bench.lab. IN A")
    wire = _answer(
        query,
        ("www.bench.lab.", "CNAME", "edge.bench.lab."),
        ("edge.bench.lab.", "A", "127.0.0.9"),
    )
    assert first_a(wire, 4242) == "127.0.0.9"


def test_floor_lookup_refuses_what_is_not_an_answer() -> None:
    query = a_query("www.bench.lab", 7)
    refused = {
        "not an answer": (_answer(query, ("www.bench.lab.", "A", "127.0.0.9")), 8),  # other id
        "rcode 3": (_answer(query, rcode=3), 7),
        "no A record": (_answer(query), 7),
        "short answer": (query[:8], 7),
    }
    for error, (wire, query_id) in refused.items():
        with pytest.raises(ValueError, match=error):
            first_a(wire, query_id)


def test_every_floor_probes_only_the_kinds_its_engine_can() -> None:
    for kind, subjects in SUBJECTS.items():
        for floor in set(subjects) & set(FLOORS):
            assert kind in ENGINE_KINDS[floor.removeprefix("floor_")], (kind, floor)


def test_floor_reads_an_answer_up_to_its_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    assert not complete(head[:20])
    assert not complete(head + b"abc")
    assert complete(head + b"abcde")
    with pytest.raises(ValueError, match="Content-Length"):
        complete(b"HTTP/1.1 200 OK\r\n\r\nbody")
