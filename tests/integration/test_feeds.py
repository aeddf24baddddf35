"""The feeds end to end on loopback: the real exporter (runtime + web app) against the fake
status page and the fake RIS Live WebSocket of exporter.sim.feeds, replaying 2021-like
sequences, disconnects, malformed and oversized messages, and unreachable feeds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import textwrap
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.config import loader
from exporter.engine.runtime import Runtime
from exporter.sim.feeds import FeedServer, peers
from exporter.web.server import RUNTIME, init_app
from tests.conftest import closed_port
from tests.integration.test_web import reference_metrics, scrape, wait_for

DNS_A, DNS_B, EXTRA_V6 = "129.134.30.0/23", "185.89.218.0/23", "2a03:2880:f0fc::/48"


@pytest.fixture
async def feeds() -> AsyncIterator[FeedServer]:
    server = await FeedServer().start()
    yield server
    await server.close()


def feeds_config(feeds: FeedServer, **options: str | bool | None) -> loader.Config:
    return loader.parse(feeds_config_text(feeds, **options), "feeds-test.yml")


def feeds_config_text(
    feeds: FeedServer,
    *,
    allow: str = "127.0.0.0/8",
    bgp_url: str | None = None,
    status_url: str | None = None,
    seed: bool = True,
) -> str:
    urls = feeds.urls()
    text = textwrap.dedent(
        f"""
        builtin_catalog: false
        global: {{interval: 200ms, timeout: 1s, recheck_interval: 100ms}}
        dns: {{resolvers: ["127.0.0.1:{closed_port(kind=__import__("socket").SOCK_DGRAM)}"]}}
        egress: {{allow_networks: ["{allow}"]}}
        feeds:
          official_status: {{enabled: true, url: "{status_url or urls["official_status"]}", interval: 200ms, timeout: 1s}}
          bgp:
            enabled: true
            url: "{bgp_url or urls["bgp"]}"
            prefixes: ["{EXTRA_V6}"]
            min_peers: 3
            connect_timeout: 1s
            reconnect_max: 500ms
            seed: {{enabled: {str(seed).lower()}, url: "{urls["seed"]}"}}
            baseline: {{enabled: true, url: "{urls["baseline"]}", interval: 60s}}
        services:
          facebook:
            status_orgs: [facebook-login, graph-api]
            dns_prefixes: ["{DNS_A}", "{DNS_B}"]
            checks: {{chat: {{kind: tcp, host: 127.0.0.1, port: {closed_port()}}}}}
          instagram:
            dns_prefixes: ["{DNS_A}", "{DNS_B}"]
            checks: {{web: {{kind: tcp, host: 127.0.0.1, port: {feeds.base.rsplit(":", 1)[1]}}}}}
        """
    )
    return text


@pytest.fixture
def start() -> Callable[[loader.Config], TestClient]:
    """A started exporter for a config; the returned client is entered by the test."""

    def make(cfg: loader.Config) -> TestClient:
        return TestClient(TestServer(init_app(Runtime(cfg), lambda: cfg)))

    return make


@contextlib.asynccontextmanager
async def seeded_exporter(
    feeds: FeedServer, start: Callable[[loader.Config], TestClient], *, routed: int
) -> AsyncIterator[TestClient]:
    """A started exporter streaming BGP, its table seeded by the looking glass with `routed`
    silent peers that route both DNS prefixes."""
    await feeds.ris.update(peers(routed), announce=[DNS_A, DNS_B])
    async with start(feeds_config(feeds)) as client:
        ris = client.app[RUNTIME].feeds.ris
        await wait_for(lambda: ris.connected and feed_health(client, "bgp_seed").up)
        yield client


def status_of(client: TestClient, service: str) -> tuple[str, str]:
    state = client.app[RUNTIME].services[service]
    return state.status.value, state.layer.value


def feed_health(client: TestClient, name: str) -> object:
    return next(h for h in client.app[RUNTIME].feeds.view().health if h.name == name)


async def test_2021_replay_down_at_bgp_then_back(feeds: FeedServer, start: Callable) -> None:
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(lambda: runtime.feeds.ris is not None and runtime.feeds.ris.connected)
        await wait_for(lambda: len(feeds.ris.subscriptions) == 3)
        assert [s["prefix"] for s in feeds.ris.subscriptions] == [DNS_A, DNS_B, EXTRA_V6]
        assert all(s["moreSpecific"] is True for s in feeds.ris.subscriptions)
        await wait_for(lambda: status_of(client, "instagram") == ("up", "none"))

        # Peers announce both DNS prefixes, then most of them withdraw both (15:39 UTC).
        await feeds.ris.update(peers(10), announce=[DNS_A, DNS_B])
        await feeds.ris.update(peers(10)[:4], withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: runtime.feeds.ris.messages >= 14)
        assert status_of(client, "instagram") == ("up", "none")  # 4 of 10 is not most
        await feeds.ris.update(peers(10)[4:8], withdraw=[DNS_A])
        await wait_for(lambda: runtime.feeds.ris.messages >= 18)
        assert status_of(client, "instagram") == ("up", "none")  # one prefix still routed
        await feeds.ris.update(peers(10)[4:8], withdraw=[DNS_B])
        await wait_for(lambda: status_of(client, "instagram") == ("down", "bgp"), timeout=2)
        detail = runtime.services["instagram"].detail
        assert "DNS still answers from caches" in detail

        families = await scrape(client)
        peers_seen = {
            (s.labels["prefix"], s.labels["state"]): s.value
            for s in families["meta_bgp_prefix_peers"].samples
        }
        assert peers_seen[(DNS_A, "withdrawn")] == 8 and peers_seen[(DNS_A, "seeing")] == 2
        withdrawn = {
            s.labels["prefix"]: s.value for s in families["meta_bgp_prefix_withdrawn"].samples
        }
        assert withdrawn == {DNS_A: 1.0, DNS_B: 1.0, EXTRA_V6: 0.0}
        layer = {
            s.labels["layer"]: s.value
            for s in families["meta_service_failure_layer"].samples
            if s.labels["service"] == "instagram"
        }
        assert layer["bgp"] == 1.0

        # Routes come back (~21:00 UTC).
        await feeds.ris.update(peers(10)[:8], announce=[DNS_A, DNS_B])
        await wait_for(lambda: status_of(client, "instagram") == ("up", "none"), timeout=2)


async def test_disconnects_clear_state_and_reconnect_with_backoff(
    feeds: FeedServer, start: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "exporter.feeds")
    async with seeded_exporter(feeds, start, routed=5) as client:
        runtime: Runtime = client.app[RUNTIME]
        ris = runtime.feeds.ris
        await feeds.ris.update(peers(5), withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: status_of(client, "instagram") == ("down", "bgp"))

        assert await feeds.ris.disconnect() == 1
        await wait_for(lambda: not feed_health(client, "bgp").up)
        # While the stream is down nothing is known: no bgp verdict, no visibility series.
        await wait_for(lambda: status_of(client, "instagram") == ("up", "none"))
        assert not (await scrape(client))["meta_bgp_prefix_peers"].samples  # type: ignore[attr-defined]
        await wait_for(lambda: ris.connected and feeds.ris.connections == 2, timeout=5)
        assert len(feeds.ris.subscriptions) == 6  # subscribed again
        # The table started afresh: the old withdrawals are not replayed into a false alarm.
        assert runtime.feeds.view().bgp[DNS_A].known == 0
        errors = feed_health(client, "bgp").errors
        assert sum(errors.values()) >= 1


@pytest.mark.parametrize("seed", [True, False], ids=["seeded", "unseeded"])
async def test_the_seed_makes_most_peers_mean_most_of_those_routing_it(
    feeds: FeedServer, start: Callable, seed: bool
) -> None:
    """20 peers route both prefixes and stay silent; then 10 withdraw both. Seeded from the
    looking glass, 10 of 20 is not most. Unseeded, the silent 10 are unknown and 10 of 10 looks
    like most: the false alarm the seed is there to prevent."""
    await feeds.ris.update(peers(20), announce=[DNS_A, DNS_B])  # before we connect: unheard
    async with start(feeds_config(feeds, seed=seed)) as client:
        runtime: Runtime = client.app[RUNTIME]
        ris = runtime.feeds.ris
        if seed:
            await wait_for(lambda: feed_health(client, "bgp_seed").up)
            await wait_for(lambda: runtime.feeds.view().bgp[DNS_A].seeing == 20)
            assert feeds.looking_glass.requests >= 3  # one per watched prefix (and retries)
            assert feeds.looking_glass.last_query["look_back_limit"] == "900"
            assert feeds.looking_glass.last_query["sourceapp"] == "meta-outage-exporter"
            bgp_view = runtime.feeds.view().bgp
            assert all(view.seeded for view in bgp_view.values())
            assert bgp_view[EXTRA_V6].known == 0  # nobody routes it
        else:
            await wait_for(lambda: ris.connected)
            assert feeds.looking_glass.requests == 0
            assert all(h.name != "bgp_seed" for h in runtime.feeds.view().health)
        await wait_for(lambda: status_of(client, "instagram") == ("up", "none"))

        await feeds.ris.update(peers(20)[:10], withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: ris.messages >= 10)
        if not seed:
            await wait_for(lambda: status_of(client, "instagram") == ("down", "bgp"))
            return
        view = runtime.feeds.view().bgp[DNS_A]
        assert (view.seeing, view.withdrawn, view.withdrawn_now) == (10, 10, False)
        assert status_of(client, "instagram") == ("up", "none")

        await feeds.ris.update(peers(20)[10:12], withdraw=[DNS_A, DNS_B])  # 12 of 20: most
        await wait_for(lambda: status_of(client, "instagram") == ("down", "bgp"))

        # A reconnect starts afresh and seeds again from what the looking glass shows now.
        asked = feeds.looking_glass.requests
        await feeds.ris.disconnect()
        await wait_for(lambda: feeds.ris.connections == 2 and feeds.looking_glass.requests > asked)

        def reseeded() -> bool:
            view = runtime.feeds.view().bgp
            return view is not None and view[DNS_A].seeded and view[DNS_A].known == 8

        await wait_for(reseeded)
        assert status_of(client, "instagram") == ("up", "none")  # 8 seen, nothing withdrawn


async def test_a_failed_seed_is_reported_and_retried(feeds: FeedServer, start: Callable) -> None:
    await feeds.ris.update(peers(12), announce=[DNS_A, DNS_B])
    feeds.looking_glass.http_status = 503
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(lambda: feed_health(client, "bgp_seed").errors)
        assert not feed_health(client, "bgp_seed").up
        assert feed_health(client, "bgp").up and runtime.feeds.ris.connected  # streams unseeded
        assert runtime.feeds.view().bgp[DNS_A].known == 0
        # Unseeded, 3 peers withdrawing are all the table knows: still no withdrawal judged.
        await wait_for(lambda: status_of(client, "instagram") == ("up", "none"))
        await feeds.ris.update(peers(3), withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: runtime.feeds.view().bgp[DNS_A].withdrawn == 3)
        assert not runtime.feeds.view().bgp[DNS_A].withdrawn_now
        assert status_of(client, "instagram") == ("up", "none")
        families = await scrape(client)
        up = {s.labels["feed"]: s.value for s in families["meta_feed_up"].samples}
        assert up["bgp_seed"] == 0.0 and up["bgp"] == 1.0

        feeds.looking_glass.http_status = 200  # retried with backoff (reconnect_max 500 ms)
        await wait_for(lambda: feed_health(client, "bgp_seed").up)
        view = runtime.feeds.view().bgp[DNS_A]
        assert (view.seeing, view.withdrawn, view.withdrawn_now) == (9, 3, False)
        assert feeds.ris.connections == 1  # the stream itself was never dropped


async def test_routes_that_appear_after_an_empty_snapshot_are_judged(
    feeds: FeedServer, start: Callable
) -> None:
    """Started before the prefixes were announced: the snapshot names nobody, so every peer
    that routes them later speaks on the stream, and a full withdrawal is judged."""
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(lambda: feed_health(client, "bgp_seed").up)
        assert runtime.feeds.view().bgp[DNS_A].seeded
        await feeds.ris.update(peers(10), announce=[DNS_A, DNS_B])
        await feeds.ris.update(peers(10), withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: status_of(client, "instagram") == ("down", "bgp"))


async def test_a_slow_seed_is_abandoned_with_its_connection(
    feeds: FeedServer, start: Callable
) -> None:
    """The looking glass hangs: the stream runs meanwhile (unjudged), a reconnect drops the
    pending request and asks again, and shutting down does not wait for it."""
    await feeds.ris.update(peers(6), announce=[DNS_A, DNS_B])
    feeds.looking_glass.delay = 30.0
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(lambda: runtime.feeds.ris.connected and feeds.looking_glass.requests >= 1)
        await feeds.ris.update(peers(6), withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: runtime.feeds.view().bgp[DNS_A].withdrawn == 6)
        assert not runtime.feeds.view().bgp[DNS_A].withdrawn_now  # no snapshot yet
        asked = feeds.looking_glass.requests
        await feeds.ris.disconnect()
        await wait_for(lambda: feeds.ris.connections == 2)
        await wait_for(lambda: feeds.looking_glass.requests > asked)  # asked anew
        started = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - started < 5  # not held by the 30 s answer


async def test_malformed_and_oversized_messages(
    feeds: FeedServer, start: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "exporter.feeds")
    async with seeded_exporter(feeds, start, routed=3) as client:
        runtime: Runtime = client.app[RUNTIME]
        ris = runtime.feeds.ris
        for text in (
            "not json",
            "[]",
            json.dumps({"type": "ris_message", "data": {"peer": 5}}),
            "{}",
        ):
            await feeds.ris.send_text(text)
        await feeds.ris.update(peers(3), withdraw=[DNS_A, DNS_B])
        await wait_for(lambda: status_of(client, "instagram") == ("down", "bgp"))
        assert ris.malformed == 4 and ris.connected
        assert (
            sum("malformed message" in r.message for r in caplog.records) == 1
        )  # once, not 4 times

        await feeds.ris.send_text("x" * (ris.max_message_bytes + 1))
        await wait_for(lambda: feeds.ris.connections == 2, timeout=5)
        families = await scrape(client)
        errors = {
            s.labels["reason"]: s.value
            for s in families["meta_feed_errors"].samples
            if s.labels["feed"] == "bgp"
        }
        assert errors["malformed"] == 4
        assert errors["too_large"] == 1


async def test_official_status_conditional_polls_changes_and_unknown_strings(
    feeds: FeedServer, start: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "exporter.feeds")
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(lambda: feeds.status.not_modified >= 2)  # ETag honoured: 304s
        await wait_for(lambda: status_of(client, "facebook")[0] == "down")

        def official(service: str) -> dict[str, float]:
            return {}

        feeds.status.set_status("facebook-login", "facebook-login", "Major disruptions")
        await wait_for(
            lambda: any(
                c.status.value == "major_disruption"
                for c in runtime.feeds.view().official.components
            )
        )
        families = await scrape(client)
        per_service = {
            s.labels["status"]: s.value
            for s in families["meta_official_service_status"].samples
            if s.labels["service"] == "facebook"
        }
        assert per_service["major_disruption"] == 1.0 and per_service["no_issues"] == 0.0
        lag = {
            s.labels["service"]: s.value
            for s in families["meta_official_acknowledgement_lag_seconds"].samples
        }
        assert set(lag) == {"facebook"} and lag["facebook"] > 0  # we said it first

        for _ in range(3):
            feeds.status.set_status("graph-api", "graph-api", "Partial outage")
            await wait_for(
                lambda: any(
                    c.text == "Partial outage" for c in runtime.feeds.view().official.components
                )
            )
        component = next(
            c for c in runtime.feeds.view().official.components if c.org == "graph-api"
        )
        assert component.status.value == "unknown"
        assert sum("'Partial outage'" in r.message for r in caplog.records) == 1  # logged once


async def test_bad_documents_keep_the_last_good_board(feeds: FeedServer, start: Callable) -> None:
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        feeds.status.set_status("messenger", "messenger", "Low disruptions")
        await wait_for(lambda: feed_health(client, "official_status").up)
        await wait_for(
            lambda: any(
                c.org == "messenger" and c.status.value == "low_disruption"
                for c in runtime.feeds.view().official.components
            )
        )
        for raw, status, reason in (
            ('{"orgs": 1}', 200, "malformed"),
            ("<html>", 200, "malformed"),
            (None, 503, "http_status"),
        ):
            feeds.status.serve(raw, status)
            await wait_for(
                lambda reason=reason: (
                    feed_health(client, "official_status").errors.get(_error(reason), 0) >= 1
                )
            )
            assert not feed_health(client, "official_status").up
            board = runtime.feeds.view().official
            assert any(
                c.org == "messenger" and c.status.value == "low_disruption"
                for c in board.components
            )
        feeds.status.serve(None, 200)
        await wait_for(lambda: feed_health(client, "official_status").up)


def _error(name: str) -> object:
    from exporter.feeds.health import FeedError

    return FeedError(name)


async def test_unreachable_feeds_are_reported_never_blamed_on_meta(
    feeds: FeedServer, start: Callable
) -> None:
    dead = closed_port()
    cfg = feeds_config(
        feeds,
        bgp_url=f"ws://127.0.0.1:{dead}/v1/ws/",
        status_url=f"http://127.0.0.1:{dead}/data/orgs.json",
    )
    async with start(cfg) as client:
        await wait_for(
            lambda: (
                feed_health(client, "bgp").errors and feed_health(client, "official_status").errors
            )
        )
        await wait_for(lambda: status_of(client, "instagram") == ("up", "none"))
        families = await scrape(client)
        up = {s.labels["feed"]: s.value for s in families["meta_feed_up"].samples}
        assert up["bgp"] == 0.0 and up["official_status"] == 0.0 and up["bgp_baseline"] == 1.0
        reasons = {
            (s.labels["feed"], s.labels["reason"]) for s in families["meta_feed_errors"].samples
        }
        assert ("bgp", "unreachable") in reasons and ("official_status", "unreachable") in reasons
        assert (
            "meta_official_status" not in families or not families["meta_official_status"].samples
        )


async def test_the_egress_policy_fences_the_feeds_in(feeds: FeedServer, start: Callable) -> None:
    async with start(feeds_config(feeds, allow="10.0.0.0/8")) as client:
        await wait_for(
            lambda: (
                feed_health(client, "bgp").errors and feed_health(client, "official_status").errors
            )
        )
        for name in ("bgp", "official_status", "bgp_baseline"):
            assert set(feed_health(client, name).errors) == {_error("blocked_by_policy")}, name
        assert feeds.status.requests == 0 and feeds.ris.connections == 0
        assert feeds.looking_glass.requests == 0


async def test_a_reload_keeps_the_stream_when_its_settings_are_unchanged(
    feeds: FeedServer, start: Callable
) -> None:
    text = feeds_config_text(feeds)
    async with start(loader.parse(text, "a.yml")) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(lambda: runtime.feeds.ris.connected)
        first = runtime.feeds
        assert (await runtime.reload(lambda: loader.parse(text, "b.yml")))[0]
        assert runtime.feeds is first and feeds.ris.connections == 1
        # A new egress policy is a new feed set: the feeds must obey the new fence.
        fenced = text.replace('allow_networks: ["127.0.0.0/8"]', 'allow_networks: ["127.0.0.0/16"]')
        assert fenced != text
        assert (await runtime.reload(lambda: loader.parse(fenced, "c.yml")))[0]
        assert runtime.feeds is not first
        await wait_for(lambda: runtime.feeds.ris.connected and feeds.ris.connections == 2)


async def test_every_feed_metric_matches_the_reference(feeds: FeedServer, start: Callable) -> None:
    async with start(feeds_config(feeds)) as client:
        runtime: Runtime = client.app[RUNTIME]
        await wait_for(
            lambda: runtime.feeds.ris.connected and status_of(client, "facebook")[0] == "down"
        )
        feeds.status.set_status("facebook-login", "facebook-login", "Major disruptions")
        await feeds.ris.update(peers(3), withdraw=[DNS_A])
        await feeds.ris.send_text("not json")  # so that an error counter exists
        await wait_for(
            lambda: (
                runtime.feeds.ris.malformed == 1
                and runtime.feeds.view().official.disrupted_since
                and runtime.feeds.view().baseline
            )
        )
        families = await scrape(client)
        reference = {
            n: v
            for n, v in reference_metrics().items()
            if n.startswith(("meta_feed_", "meta_official_", "meta_bgp_"))
        }
        exposed = {
            ("meta_feed_errors_total" if n == "meta_feed_errors" else n): f
            for n, f in families.items()
        }
        for name, (kind, labels) in reference.items():
            family = exposed.get(name)
            assert family is not None and family.samples, f"{name} is documented but not exposed"
            assert family.type == kind, name
            for sample in family.samples:
                assert set(sample.labels) == labels, (name, sample.labels)


async def test_the_fake_stream_drops_a_vanished_client(feeds: FeedServer) -> None:
    """The lab's control call must not fail when one vantage's stream died (its link is down)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        gone = await http.ws_connect(feeds.urls()["bgp"])
        alive = await http.ws_connect(feeds.urls()["bgp"])
        await wait_for(lambda: len(feeds.ris.clients) == 2)
        # The server's side of one connection breaks; send before its handler notices.
        server_side = next(iter(feeds.ris.clients))
        server_side._writer.transport.abort()  # type: ignore[union-attr]
        assert await feeds.ris.update(peers(1), announce=[DNS_A]) == 1
        assert len(feeds.ris.clients) == 1
        await gone.close()
        message = await alive.receive_json(timeout=2)
        assert message["data"]["announcements"][0]["prefixes"] == [DNS_A]
        await alive.close()


async def test_the_one_shot_check_reports_no_feeds(feeds: FeedServer) -> None:
    """`check` never starts the feeds, so it must not report them as down."""
    runtime = Runtime(feeds_config(feeds))
    assert runtime.feeds.enabled
    view = runtime.snapshot().feeds
    assert view.health == () and view.official is None and view.bgp is None
