"""Feeds, pure parts: RIS Live parsing and prefix state, the status page's mapping, the
bgp layer in the verdict, and the feeds' config errors."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.config import loader
from exporter.engine.verdict import CheckState, service_verdict
from exporter.feeds import bgp
from exporter.feeds.feedset import parse_baseline
from exporter.feeds.official import (
    MAX_ORGS,
    Board,
    MalformedDocument,
    OfficialStatus,
    acknowledgement_lag,
    map_status,
    next_board,
    parse_orgs,
    service_official,
)
from exporter.model import Layer, Status
from exporter.sim.feeds import peers, ris_update
from tests.unit.test_verdict import CONFIRM, SERVICE, UP_VANTAGE, failing, ok

DNS_A, DNS_B = "129.134.30.0/23", "185.89.218.0/23"


def table(min_peers: int = 3, ratio: float = 0.5) -> bgp.PrefixTable:
    return bgp.PrefixTable([DNS_A, DNS_B], min_peers=min_peers, withdrawn_ratio=ratio)


def feed(t: bgp.PrefixTable, peer_list: list[str], **change: list[str]) -> None:
    for peer in peer_list:
        event = bgp.parse_message(ris_update(peer, timestamp=100.0, **change))
        assert event is not None
        t.apply(event)


# -- RIS Live messages ----------------------------------------------------------------------


def test_update_is_parsed_with_a_peer_per_collector_session() -> None:
    event = bgp.parse_message(ris_update("192.0.2.1", announce=[DNS_A], withdraw=["10.0.0.0/8"]))
    assert isinstance(event, bgp.Update)
    assert event.peer == "rrc00/192.0.2.1"
    assert [str(n) for n in event.announced] == [DNS_A]
    assert [str(n) for n in event.withdrawn] == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "ris_subscribe_ok", "data": {}},
        {"type": "pong"},
        {"type": "ris_message", "data": {"peer": "p", "host": "h", "type": "KEEPALIVE"}},
    ],
)
def test_messages_without_routes_are_ignored(message: dict) -> None:
    assert bgp.parse_message(message) is None


def test_peer_state_down_forgets_the_peer() -> None:
    t = table(min_peers=1)
    feed(t, ["p1"], withdraw=[DNS_A])
    assert t.view(DNS_A).withdrawn == 1
    down = {
        "type": "ris_message",
        "data": {"peer": "p1", "host": "rrc00", "type": "RIS_PEER_STATE", "state": "down"},
    }
    t.apply(bgp.parse_message(down))  # type: ignore[arg-type]
    assert t.view(DNS_A).known == 0


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ([], "not an object"),
        ({"type": "ris_error", "data": {"message": "bad subscription"}}, "ris_error"),
        ({"type": "ris_message"}, "without a 'data'"),
        ({"type": "ris_message", "data": {"type": "UPDATE"}}, "without a 'peer'"),
        ({"type": "ris_message", "data": {"peer": "p", "type": "UPDATE"}}, "timestamp"),
        (
            {
                "type": "ris_message",
                "data": {"peer": "p", "type": "UPDATE", "timestamp": 1, "withdrawals": ["nope"]},
            },
            "withdrawals[0]: 'nope' is not a prefix",
        ),
        (
            {
                "type": "ris_message",
                "data": {
                    "peer": "p",
                    "type": "UPDATE",
                    "timestamp": 1,
                    "announcements": [{"prefixes": 7}],
                },
            },
            "announcements[0].prefixes: expected a list",
        ),
    ],
)
def test_malformed_messages_say_what_is_wrong(message: object, complaint: str) -> None:
    with pytest.raises(
        bgp.MalformedMessage, match=complaint.replace("[", r"\[").replace("]", r"\]")
    ):
        bgp.parse_message(message)


# -- prefix state ---------------------------------------------------------------------------


def test_a_prefix_is_withdrawn_only_when_most_known_peers_withdrew_it() -> None:
    t = table()
    feed(t, peers(10), announce=[DNS_A])
    feed(t, peers(5), withdraw=[DNS_A])
    view = t.view(DNS_A)
    assert (view.seeing, view.withdrawn, view.withdrawn_now) == (5, 5, False)  # half is not most
    feed(t, peers(6), withdraw=[DNS_A])
    assert t.view(DNS_A).withdrawn_now
    assert t.view(DNS_A).visibility == pytest.approx(0.4)
    assert t.view(DNS_A).last_withdrawal == 100.0
    assert not t.view(DNS_B).withdrawn_now  # never heard of: unknown, not withdrawn


def test_too_few_known_peers_is_never_a_withdrawal() -> None:
    t = table(min_peers=3)
    feed(t, peers(2), withdraw=[DNS_A])
    assert not t.view(DNS_A).withdrawn_now
    feed(t, peers(3)[2:], withdraw=[DNS_A])
    assert t.view(DNS_A).withdrawn_now


def test_a_more_specific_keeps_the_prefix_visible() -> None:
    t = table(min_peers=1)
    feed(t, ["p1"], announce=[DNS_A, "129.134.30.0/24"])
    feed(t, ["p1"], withdraw=[DNS_A])
    assert t.view(DNS_A).seeing == 1  # the /24 inside still routes there
    feed(t, ["p1"], withdraw=["129.134.30.0/24"])
    assert t.view(DNS_A).withdrawn_now
    feed(t, ["p1"], announce=[DNS_A])  # re-announced
    assert not t.view(DNS_A).withdrawn_now and t.view(DNS_A).seeing == 1


def test_prefixes_outside_the_watched_ones_and_other_families_are_not_counted() -> None:
    t = table(min_peers=1)
    feed(t, ["p1"], withdraw=["129.134.0.0/16", "2a03:2880::/32", "10.0.0.0/8"])
    assert t.view(DNS_A).known == 0


def test_clear_forgets_everything() -> None:
    t = table(min_peers=1)
    feed(t, ["p1"], withdraw=[DNS_A])
    t.clear()
    assert t.view(DNS_A).known == 0 and not t.view(DNS_A).withdrawn_now


def test_memory_is_bounded_whatever_the_feed_sends() -> None:
    t = table(min_peers=1)
    feed(t, [f"p{i}" for i in range(bgp.MAX_PEERS_PER_PREFIX + 50)], announce=[DNS_A])
    assert t.view(DNS_A).known == bgp.MAX_PEERS_PER_PREFIX
    specifics = [f"129.134.30.{i}/32" for i in range(bgp.MAX_ROUTES_PER_PEER + 10)]
    feed(t, ["p0"], announce=specifics)
    assert len(t._states[DNS_A].routes["rrc00/p0"]) == bgp.MAX_ROUTES_PER_PEER


# -- the looking-glass seed ------------------------------------------------------------------


def looking_glass(*rrcs: tuple[str, list[tuple[str, str]]]) -> dict:
    """A RIPEstat looking-glass answer: per collector, (peer, route) entries."""
    return {
        "data": {
            "rrcs": [
                {
                    "rrc": name,
                    "location": "Amsterdam, NL",
                    "peers": [
                        {"peer": peer, "prefix": route, "as_path": "64500 32934"}
                        for peer, route in entries
                    ],
                }
                for name, entries in rrcs
            ]
        }
    }


@pytest.mark.parametrize("host", ["rrc21", "rrc21.ripe.net", "rrc21.ris.ripe.net", "RRC21"])
def test_looking_glass_and_ris_live_name_a_peer_alike(host: str) -> None:
    routes = bgp.parse_looking_glass(
        looking_glass(("RRC21", [("2001:DB8::0:1", DNS_A), ("192.0.2.1", DNS_A)]))
    )
    assert [peer for peer, _ in routes] == ["rrc21/2001:db8::1", "rrc21/192.0.2.1"]
    live = bgp.parse_message(ris_update("2001:db8::1", announce=[DNS_A], host=host))
    assert isinstance(live, bgp.Update) and live.peer == routes[0][0]


def test_the_seed_adds_silent_peers_and_never_overrides_the_stream() -> None:
    t = table(min_peers=3)
    feed(t, ["p1"], withdraw=[DNS_A])  # the stream spoke of p1 after the snapshot was taken
    snapshot = bgp.parse_looking_glass(
        looking_glass(
            ("rrc00", [("p1", DNS_A), ("p2", DNS_A), ("p2", "129.134.31.0/24")]),
            ("rrc01", [("p2", DNS_A), ("p3", "10.0.0.0/8")]),  # another session; not ours
        )
    )
    added = t.seed(DNS_A, snapshot)
    view = t.view(DNS_A)
    assert added == 2 and (view.seeing, view.withdrawn) == (2, 1)  # rrc00/p2, rrc01/p2; p1 out
    assert t._states[DNS_A].routes["rrc00/p2"] == {DNS_A, "129.134.31.0/24"}
    assert t.view(DNS_B).known == 0 and not t.view(DNS_B).seeded  # its own snapshot only
    # Seeded peers then follow the stream like any other.
    feed(t, ["p2"], withdraw=[DNS_A, "129.134.31.0/24"])
    assert t.view(DNS_A).withdrawn == 2 and t.view(DNS_A).seeing == 1


def test_an_unknown_peer_withdrawing_a_more_specific_stays_unknown() -> None:
    """Traffic engineering: six peers drop a /24 inside the /23 they still route. Counting them
    as withdrawn would make a false "most peers", and the seed could not undo it."""
    t = table(min_peers=3)
    six = [f"p{i}" for i in range(6)]
    feed(t, six, withdraw=["129.134.31.0/24"])
    assert t.view(DNS_A).known == 0
    snapshot = [(f"rrc00/p{i}", bgp._network(DNS_A, "x")) for i in range(10)]
    assert t.seed(DNS_A, snapshot) == 10
    view = t.view(DNS_A)
    assert (view.seeing, view.withdrawn, view.withdrawn_now) == (10, 0, False)
    feed(t, six, withdraw=[DNS_A])  # the /23 itself: now they have withdrawn
    assert t.view(DNS_A).withdrawn == 6 and t.view(DNS_A).withdrawn_now


def test_a_peer_known_only_by_a_more_specific_is_never_counted_withdrawn() -> None:
    """Eight seeded peers announce, then withdraw, a /24 inside the /23 they still route (a
    path change, then traffic engineering): the /23 is still theirs."""
    t = table(min_peers=3)
    t.seed(DNS_A, [(f"rrc00/p{i}", bgp._network(DNS_A, "x")) for i in range(10)])
    eight = [f"p{i}" for i in range(8)]
    feed(t, eight, announce=["129.134.30.0/24"])
    feed(t, eight, withdraw=["129.134.30.0/24"])
    view = t.view(DNS_A)
    assert (view.seeing, view.withdrawn, view.withdrawn_now) == (10, 0, False)
    # Unseeded: heard of only through the /24, they drop back to unknown, not "withdrawn".
    bare = table(min_peers=3)
    feed(bare, eight, announce=["129.134.30.0/24"])
    assert bare.view(DNS_A).seeing == 8
    feed(bare, eight, withdraw=["129.134.30.0/24"])
    assert bare.view(DNS_A).known == 0
    # Known through the /24 first, the snapshot still adds the /23 they route.
    late = table(min_peers=3)
    feed(late, ["p1"], announce=["129.134.30.0/24"])
    late.seed(DNS_A, [("rrc00/p1", bgp._network(DNS_A, "x"))])
    feed(late, ["p1"], withdraw=["129.134.30.0/24"])
    assert late.view(DNS_A).seeing == 1


def test_a_collector_named_by_address_keeps_its_whole_name() -> None:
    assert bgp.peer_id("193.0.4.28", "192.0.2.1") == "193.0.4.28/192.0.2.1"
    assert bgp.peer_id("rrc03.ripe.net", "192.0.2.1") == "rrc03/192.0.2.1"


def test_the_backoff_never_overflows() -> None:
    from exporter.feeds.rislive import backoff

    assert 48 <= backoff(10_000, 60) <= 60


def test_with_a_seed_configured_nothing_is_withdrawn_before_its_snapshot() -> None:
    t = bgp.PrefixTable([DNS_A, DNS_B], min_peers=3, withdrawn_ratio=0.5, require_seed=True)
    feed(t, ["p1", "p2", "p3"], withdraw=[DNS_A, DNS_B])
    assert t.view(DNS_A).withdrawn == 3 and not t.view(DNS_A).withdrawn_now
    t.seed(DNS_A, [("rrc00/p9", bgp._network(DNS_A, "x"))])  # one silent peer still routes it
    assert t.view(DNS_A).withdrawn_now and not t.view(DNS_B).withdrawn_now  # 3 of 4
    t.seed(DNS_B, [])  # nobody routed it: whoever does later must say so on the stream
    assert t.view(DNS_B).seeded and t.view(DNS_B).withdrawn_now  # 3 of 3
    t.clear()  # a reconnect: wait for a new snapshot
    feed(t, ["p1", "p2", "p3"], withdraw=[DNS_A])
    assert not t.view(DNS_A).withdrawn_now and not t.view(DNS_A).seeded


def test_the_seed_is_bounded_like_the_stream() -> None:
    t = table(min_peers=1)
    many = [(f"rrc00/p{i}", bgp._network(DNS_A, "x")) for i in range(bgp.MAX_PEERS_PER_PREFIX + 9)]
    assert t.seed(DNS_A, many) == bgp.MAX_PEERS_PER_PREFIX
    assert t.view(DNS_A).known == bgp.MAX_PEERS_PER_PREFIX
    huge = looking_glass(("rrc00", [("p", DNS_A)] * (bgp.MAX_SEED_ROUTES + 1)))
    with pytest.raises(bgp.MalformedMessage, match=f"more than {bgp.MAX_SEED_ROUTES} routes"):
        bgp.parse_looking_glass(huge)


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({}, "no data.rrcs"),
        ({"data": {"rrcs": {}}}, "data.rrcs: expected a list"),
        ({"data": {"rrcs": [{"peers": []}]}}, "data.rrcs[0]: expected an object with an 'rrc'"),
        ({"data": {"rrcs": [{"rrc": "RRC00", "peers": 3}]}}, "data.rrcs[0].peers: expected a list"),
        (
            {"data": {"rrcs": [{"rrc": "RRC00", "peers": [{"prefix": DNS_A}]}]}},
            "peers[0]: expected",
        ),
        (
            {"data": {"rrcs": [{"rrc": "RRC00", "peers": [{"peer": "p", "prefix": "x"}]}]}},
            "data.rrcs[0].peers[0]: 'x' is not a prefix",
        ),
    ],
)
def test_a_malformed_looking_glass_answer_says_where(document: object, complaint: str) -> None:
    with pytest.raises(bgp.MalformedMessage) as error:
        bgp.parse_looking_glass(document)
    assert complaint in str(error.value)


def test_a_bad_seed_url_names_the_place() -> None:
    text = "feeds:\n  bgp:\n    seed: {enabled: true, url: 'wss://x/'}\n"
    with pytest.raises(loader.ConfigError) as error:
        loader.parse(text, "x.yml")
    assert (
        "x.yml:3:32: feeds.bgp.seed.url: 'wss://x/' must be an absolute http or https URL"
        in str(error.value)
    )


# -- the official status page -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("No known issues", OfficialStatus.NO_ISSUES),
        ("Resolved", OfficialStatus.NO_ISSUES),
        ("low  disruptions", OfficialStatus.LOW),
        ("Medium disruptions", OfficialStatus.MEDIUM),
        ("MAJOR DISRUPTIONS", OfficialStatus.MAJOR),
        ("Partial outage", OfficialStatus.UNKNOWN),
        ("", OfficialStatus.UNKNOWN),
    ],
)
def test_status_strings_map_onto_a_fixed_enum(text: str, status: OfficialStatus) -> None:
    assert map_status(text) is status


def orgs_document(**statuses: str) -> list[dict]:
    return [
        {
            "id": org,
            "name": org,
            "services": [{"id": org, "name": org.title(), "status": text, "time": 1}],
        }
        for org, text in statuses.items()
    ]


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"orgs": []}, "top level: expected a list"),
        ([{"id": "x"}], r"\[0\].services: expected a list"),
        ([{"id": "x", "services": [{"id": "a"}]}], r"\[0\].services\[0\].status"),
        ([{"services": []}], r"\[0\].id"),
    ],
)
def test_a_malformed_document_names_the_bad_place(document: object, where: str) -> None:
    with pytest.raises(MalformedDocument, match=where):
        parse_orgs(document)


def test_the_document_is_bounded() -> None:
    document = orgs_document(**{f"org{i}": "No known issues" for i in range(MAX_ORGS + 20)})
    assert len(parse_orgs(document)) == MAX_ORGS


def test_a_disruption_keeps_its_first_seen_time_until_it_ends() -> None:
    board = next_board(
        Board(), parse_orgs(orgs_document(**{"facebook-login": "No known issues"})), 10.0
    )
    board = next_board(
        board, parse_orgs(orgs_document(**{"facebook-login": "Low disruptions"})), 20.0
    )
    board = next_board(
        board, parse_orgs(orgs_document(**{"facebook-login": "Major disruptions"})), 30.0
    )
    official = service_official(["facebook-login"], board)
    assert official is not None
    assert (official.status, official.disrupted_since) == (OfficialStatus.MAJOR, 20.0)
    board = next_board(board, parse_orgs(orgs_document(**{"facebook-login": "Resolved"})), 40.0)
    assert service_official(["facebook-login"], board).disrupted_since is None  # type: ignore[union-attr]


def test_a_service_takes_the_worst_of_its_orgs() -> None:
    document = orgs_document(
        **{"ads-manager": "Low disruptions", "marketing-api": "Major disruptions"}
    )
    board = next_board(Board(), parse_orgs(document), 5.0)
    official = service_official(["ads-manager", "marketing-api"], board)
    assert official is not None and official.status is OfficialStatus.MAJOR
    assert "marketing-api" in official.detail
    assert service_official([], board) is None
    missing = service_official(["workplace"], board)
    assert missing is not None and missing.status is OfficialStatus.UNKNOWN


def test_acknowledgement_lag() -> None:
    board = next_board(Board(), parse_orgs(orgs_document(messenger="Major disruptions")), 700.0)
    official = service_official(["messenger"], board)
    assert acknowledgement_lag(100.0, official) == 600.0
    assert acknowledgement_lag(800.0, official) == -100.0  # the page said it first
    assert acknowledgement_lag(None, official) is None  # we do not say down
    calm = service_official(
        ["messenger"],
        next_board(Board(), parse_orgs(orgs_document(messenger="No known issues")), 1.0),
    )
    assert acknowledgement_lag(100.0, calm) is None  # the page has not admitted it


def test_ripestat_baseline_is_read_per_family() -> None:
    doc = {"data": {"visibility": {"v4": {"ris_peers_seeing": 310, "total_ris_peers": 330}}}}
    baseline = parse_baseline(doc, DNS_A)
    assert (baseline.seeing, baseline.total) == (310, 330)
    with pytest.raises(MalformedDocument, match="v6"):
        parse_baseline(doc, "2a03:2880:f0fc::/48")
    with pytest.raises(MalformedDocument, match="not counts"):
        parse_baseline(
            {"data": {"visibility": {"v4": {"ris_peers_seeing": "x", "total_ris_peers": 1}}}}, DNS_A
        )


# -- the bgp layer in the verdict -------------------------------------------------------------

FACEBOOK = dataclasses.replace(SERVICE, dns_prefixes=(DNS_A, DNS_B))
ALL_OK = {c.key: ok() for c in FACEBOOK.checks}


def test_all_dns_prefixes_withdrawn_is_down_at_bgp_while_dns_still_answers() -> None:
    verdict = service_verdict(FACEBOOK, ALL_OK, UP_VANTAGE, CONFIRM, frozenset({DNS_A, DNS_B}))
    assert verdict is not None
    assert (verdict.status, verdict.layer) == (Status.DOWN, Layer.BGP)
    assert "DNS still answers from caches" in verdict.detail


def test_bgp_stays_the_layer_when_dns_fails_after_it() -> None:
    from exporter.model import Reason

    states = {
        **ALL_OK,
        ("facebook", "dns"): failing(Reason.DNS_SERVFAIL),
        ("facebook", "web"): failing(Reason.DNS_SERVFAIL),
    }
    verdict = service_verdict(FACEBOOK, states, UP_VANTAGE, CONFIRM, frozenset({DNS_A, DNS_B}))
    assert verdict is not None and verdict.layer is Layer.BGP
    assert "also failing: dns, web" in verdict.detail


@pytest.mark.parametrize(
    ("service", "withdrawn"),
    [
        pytest.param(FACEBOOK, frozenset({DNS_A}), id="one-of-two-prefixes-is-not-an-outage"),
        pytest.param(SERVICE, frozenset({DNS_A, DNS_B}), id="service-without-dns-prefixes"),
        pytest.param(FACEBOOK, frozenset(), id="no-feed"),
    ],
)
def test_bgp_does_not_judge_otherwise(service: object, withdrawn: frozenset[str]) -> None:
    verdict = service_verdict(service, ALL_OK, UP_VANTAGE, CONFIRM, withdrawn)  # type: ignore[arg-type]
    assert verdict is not None and verdict.status is Status.UP


def test_our_own_network_down_wins_over_bgp() -> None:
    from exporter.engine.verdict import VantageHealth

    verdict = service_verdict(
        FACEBOOK,
        {c.key: CheckState() for c in FACEBOOK.checks},
        VantageHealth(False, "every control check is failing"),
        CONFIRM,
        frozenset({DNS_A, DNS_B}),
    )
    assert verdict is not None and verdict.status is Status.UNKNOWN


# -- config ----------------------------------------------------------------------------------


def test_feeds_are_off_without_the_catalogue_and_prefixes_are_gathered() -> None:
    bare = loader.parse("builtin_catalog: false\nservices: {}\n", "x.yml")
    assert bare.bgp is None and bare.official_status is None
    text = (
        "builtin_catalog: false\n"
        "feeds:\n  bgp: {enabled: true, prefixes: ['2a03:2880:f0fc::/48', 129.134.30.0/23]}\n"
        "  official_status: {enabled: true, url: 'http://127.0.0.1:9/orgs.json', interval: 5s}\n"
        "services:\n  fb:\n    dns_prefixes: [129.134.30.0/23, 185.89.218.0/23]\n    status_orgs: [facebook-login]\n"
        "    checks: {web: {kind: tcp, host: 127.0.0.1, port: 9}}\n"
    )
    parsed = loader.parse(text, "x.yml")
    assert parsed.bgp is not None and parsed.official_status is not None
    assert parsed.bgp.prefixes == (DNS_A, DNS_B, "2a03:2880:f0fc::/48")  # deduplicated, in order
    assert parsed.official_status.interval == 5.0
    assert parsed.service("fb").status_orgs == ("facebook-login",)


def test_feed_config_errors_name_the_place() -> None:
    text = (
        "feeds:\n  bgp: {enabled: true, url: 'https://x/', min_peers: 0, withdrawn_ratio: 1}\n"
        "  official_status: {url: metastatus.com, timeout: 0s}\n"
        "  typo: {}\n"
        "services:\n  facebook: {dns_prefixes: [129.134.30.1/23]}\n"
    )
    with pytest.raises(loader.ConfigError) as error:
        loader.parse(text, "x.yml")
    message = str(error.value)
    for expected in (
        "x.yml:2:29: feeds.bgp.url: 'https://x/' must be an absolute ws or wss URL",
        "feeds.bgp.min_peers: must be 1 or more",
        "feeds.bgp.withdrawn_ratio: must be a fraction",
        "x.yml:3:26: feeds.official_status.url: 'metastatus.com' must be an absolute http or https URL",
        "feeds.official_status.timeout: must be greater than 0",
        "x.yml:4:9: feeds.typo: unknown key 'typo'",
        "services.facebook.dns_prefixes[0]: '129.134.30.1/23' is not a prefix: 129.134.30.1/23 has host bits set",
    ):
        assert expected in message, message
