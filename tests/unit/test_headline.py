"""The headline: the one sentence the status page, the status API and `check` lead with."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.engine.headline import VANTAGE_DOWN, Headline, headline, utc_time
from exporter.engine.verdict import ServiceState, VantageHealth
from exporter.model import Layer, Status

NOW = datetime(2026, 11, 21, 14, 30, tzinfo=UTC).timestamp()
AT_1402 = datetime(2026, 11, 21, 14, 2, 41, tzinfo=UTC).timestamp()
AT_1405 = datetime(2026, 11, 21, 14, 5, tzinfo=UTC).timestamp()
UP_VANTAGE = VantageHealth(True, "control checks pass")
NAMES = ["Facebook", "Instagram", "WhatsApp", "Messenger", "Threads", "Ads Manager"]


def up(since: float = AT_1402) -> ServiceState:
    return ServiceState(Status.UP, Layer.NONE, since, "3 checks pass")


def down(layer: Layer, since: float = AT_1402) -> ServiceState:
    return ServiceState(Status.DOWN, layer, since, f"failing at {layer.value}")


def degraded(layer: Layer = Layer.NONE, since: float = AT_1405) -> ServiceState:
    return ServiceState(Status.DEGRADED, layer, since, "slow")


def unknown() -> ServiceState:
    return ServiceState(Status.UNKNOWN, Layer.NONE, AT_1402, "every check was blocked")


def services(**states: ServiceState) -> list[tuple[str, ServiceState]]:
    """Every name in NAMES, up unless given (keyword = name without spaces)."""
    return [(name, states.get(name.replace(" ", ""), up())) for name in NAMES]


def say(items: list[tuple[str, ServiceState]], vantage: VantageHealth = UP_VANTAGE) -> Headline:
    return headline(vantage, items, ready=True, now=NOW)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param({}, Headline("ok", "All Meta services are up"), id="all-up"),
        pytest.param(
            {"WhatsApp": down(Layer.DNS)},
            Headline("down", "WhatsApp is down at DNS since 14:02 UTC"),
            id="one-down",
        ),
        pytest.param(
            {"Facebook": down(Layer.HTTP), "Instagram": down(Layer.HTTP, AT_1405)},
            Headline("down", "Facebook and Instagram are down at HTTP since 14:02 UTC"),
            id="two-down-same-layer-earliest-since",
        ),
        pytest.param(
            {n.replace(" ", ""): down(Layer.HTTP) for n in NAMES[:4]},
            Headline("down", "4 Meta services are down at HTTP since 14:02 UTC"),
            id="many-down-counted",
        ),
        pytest.param(
            {n.replace(" ", ""): down(Layer.DNS) for n in NAMES},
            Headline("down", "Every Meta service is down at DNS since 14:02 UTC"),
            id="october-2021",
        ),
        pytest.param(
            {"Facebook": down(Layer.HTTP), "WhatsApp": down(Layer.DNS, AT_1405)},
            Headline(
                "down",
                "WhatsApp is down at DNS since 14:05 UTC; Facebook is down at HTTP since 14:02 UTC",
            ),
            id="two-layers-lowest-first",
        ),
        pytest.param(
            {
                "Facebook": down(Layer.HTTP),
                "WhatsApp": down(Layer.DNS),
                "Threads": down(Layer.TLS),
            },
            Headline(
                "down",
                "Facebook, WhatsApp and Threads are down (at DNS, TLS and HTTP) since 14:02 UTC",
            ),
            id="three-layers-summarised",
        ),
        pytest.param(
            {"Instagram": degraded()},
            Headline("degraded", "Instagram is slow since 14:05 UTC"),
            id="slow",
        ),
        pytest.param(
            {"Threads": degraded(Layer.CONTENT)},
            Headline("degraded", "Threads is degraded at the content layer since 14:05 UTC"),
            id="degraded-at-content",
        ),
        pytest.param(
            {"WhatsApp": down(Layer.DNS), "Instagram": degraded(Layer.TLS)},
            Headline(
                "down",
                "WhatsApp is down at DNS since 14:02 UTC; Instagram is degraded at TLS since 14:05 UTC",
            ),
            id="down-before-degraded",
        ),
        pytest.param(
            {"Threads": unknown()},
            Headline("unknown", "Threads is not judged"),
            id="one-not-judged",
        ),
    ],
)
def test_headline_table(states: dict[str, ServiceState], expected: Headline) -> None:
    assert say(services(**{k.replace(" ", ""): v for k, v in states.items()})) == expected


def test_vantage_offline_says_the_problem_is_on_your_side_and_claims_nothing_about_meta() -> None:
    offline = VantageHealth(False, "every control check is failing")
    result = say(services(Facebook=unknown(), WhatsApp=down(Layer.DNS)), offline)
    assert result == Headline("local", VANTAGE_DOWN)
    assert "problem is on your side" in result.text and "network" in result.text
    assert "Meta cannot be checked" in result.text
    assert "fine" not in result.text and "down" not in result.text


def test_broken_resolver_is_our_side_even_while_another_layer_fails_at_meta() -> None:
    resolver_down = VantageHealth(True, "this vantage's resolver fails", dns_ok=False)
    result = say(services(Facebook=unknown(), Threads=down(Layer.TLS)), resolver_down)
    assert result.level == "local"
    assert result.text == (
        "The problem is on your side: this network's DNS resolver is failing, so DNS failures "
        "are not blamed on Meta; Threads is down at TLS since 14:02 UTC"
    )


def test_a_quic_blind_network_is_said_last_and_leaves_the_level_alone() -> None:
    blind = VantageHealth(True, "this network blocks QUIC", quic_ok=False)
    quiet = say(services(Facebook=up(), Threads=up()), blind)
    assert quiet == Headline(
        "ok",
        "All Meta services are up; this network blocks QUIC (HTTP/3), so Meta's HTTP/3 "
        "checks are not judged from here",
    )
    loud = say(services(Facebook=up(), Threads=down(Layer.TLS)), blind)
    assert loud.level == "down"
    assert loud.text.startswith("Threads is down at TLS since 14:02 UTC; this network blocks QUIC")


def test_starting_up_is_not_an_outage() -> None:
    starting = VantageHealth(True, "control checks have not run yet")
    waiting = ServiceState(Status.UNKNOWN, Layer.NONE, NOW, "no probe has finished yet")
    items = [(name, waiting) for name in NAMES]
    result = headline(starting, items, ready=False, now=NOW)
    assert result == Headline("unknown", "Checking: the first probes have not finished yet")
    # Partly checked: the rest say "not checked yet", not "not judged".
    items[0] = ("Facebook", up())
    assert headline(starting, items, ready=False, now=NOW).text == (
        "5 Meta services are not checked yet"
    )


def test_no_services() -> None:
    assert say([]) == Headline("unknown", "No Meta services are configured")


def test_single_service_catalogue_is_named_not_every() -> None:
    assert say([("WhatsApp", down(Layer.TCP))]).text == "WhatsApp is down at TCP since 14:02 UTC"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 21, 0, 0, 59, tzinfo=UTC), "00:00 UTC"),
        (datetime(2026, 11, 20, 23, 59, tzinfo=UTC), "20 Nov 23:59 UTC"),
        (datetime(2021, 10, 4, 15, 40, tzinfo=UTC), "4 Oct 2021 15:40 UTC"),
    ],
)
def test_utc_time_adds_the_date_only_when_needed(moment: datetime, expected: str) -> None:
    assert utc_time(moment.timestamp(), NOW) == expected


def test_since_on_another_day_carries_the_date() -> None:
    october = datetime(2021, 10, 4, 15, 40, tzinfo=UTC).timestamp()
    result = say([(n, down(Layer.DNS, october)) for n in NAMES])
    assert result.text == "Every Meta service is down at DNS since 4 Oct 2021 15:40 UTC"
