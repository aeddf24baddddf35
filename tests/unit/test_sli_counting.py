"""The SLI's counters (meta_probes_judged_total, meta_probe_judged_failures_total) as the
runtime keeps them: results fed to the real Runtime in order, no prober, no socket.

What must hold: a Meta result counts only once every control check ran after it with the
vantage up and settled; our outage voids what waits; and a control check's blip voids
successes and failures alike (only what that check has not vouched for), so packet loss does
not read as a burning error budget.
"""

from __future__ import annotations

from exporter.model import Reason

from .runtime_feed import Feed


def test_a_result_counts_once_every_control_check_ran_after_it() -> None:
    feed = Feed()
    feed.controls(1000.0)
    feed.meta(1001.0)
    feed.meta(1002.0, Reason.HTTP_STATUS)
    assert feed.judged == (0, 0)
    feed.controls(1003.0, which=("resolver", "by_ip"))
    assert feed.judged == (0, 0)
    feed.controls(1004.0, which=("by_name",))
    assert feed.judged == (2, 1)


def test_a_control_blip_voids_only_what_that_check_has_not_vouched_for() -> None:
    feed = Feed()
    feed.controls(1000.0)
    feed.meta(1001.0)  # success, waits for all three controls
    feed.result("control", "by_ip", 1002.0)  # by_ip vouches for it
    feed.meta(1003.0, Reason.HTTP_STATUS)  # not yet vouched for by by_ip
    feed.result("control", "by_ip", 1004.0, Reason.TCP_REFUSED)  # blip: unsettled
    feed.result("control", "by_ip", 1006.0)  # passes again: settled
    feed.controls(1007.0, which=("resolver", "by_name"))
    # The success stands (by_ip passed after it); the failure is void (by_ip's first run
    # after it failed). Before, the blip voided both and every other waiting success.
    assert feed.judged == (1, 0)


def test_a_blip_voids_a_success_like_a_failure() -> None:
    for reason in (Reason.OK, Reason.HTTP_STATUS):
        feed = Feed()
        feed.controls(1000.0)
        feed.meta(1001.0, reason)
        feed.result("control", "resolver", 1002.0, Reason.DNS_TIMEOUT)
        feed.result("control", "resolver", 1004.0)
        feed.controls(1005.0)
        assert feed.judged == (0, 0), reason


def test_our_outage_voids_everything_waiting_and_what_was_probed_in_it() -> None:
    feed = Feed()
    feed.controls(1000.0)
    feed.meta(1001.0, Reason.TCP_TIMEOUT)
    feed.controls(1002.0, Reason.TCP_UNREACHABLE, which=("by_ip", "by_name"))
    feed.controls(1004.0, Reason.TCP_UNREACHABLE, which=("by_ip", "by_name"))
    assert not feed.runtime.vantage.up
    feed.meta(1005.0, Reason.TCP_TIMEOUT)
    feed.controls(1010.0)
    assert feed.runtime.vantage.judging
    assert feed.judged == (0, 0)
    feed.meta(1011.0)
    feed.controls(1012.0)
    assert feed.judged == (1, 0)


def test_a_dns_failure_while_our_resolver_fails_never_counts() -> None:
    feed = Feed()
    feed.controls(1000.0)
    feed.controls(1001.0, Reason.DNS_TIMEOUT, which=("resolver",))
    feed.controls(1003.0, Reason.DNS_TIMEOUT, which=("resolver",))
    assert feed.runtime.vantage.up and not feed.runtime.vantage.dns_ok
    feed.meta(1004.0, Reason.DNS_TIMEOUT)
    feed.controls(1005.0, Reason.DNS_TIMEOUT, which=("resolver",))
    feed.controls(1005.0, which=("by_ip", "by_name"))
    assert feed.judged == (0, 0)


def test_control_checks_count_their_probes_while_the_vantage_is_up() -> None:
    """The baseline of our own error ratio: a control probe counts when the vantage was up
    before it (its blips, and the first failures of our outage), not while it is down."""
    feed = Feed()
    feed.controls(1000.0)  # the first round: the vantage was not known before it
    feed.controls(1001.0)
    feed.controls(1002.0, Reason.TCP_UNREACHABLE, which=("by_ip", "by_name"))
    feed.controls(1004.0, Reason.TCP_UNREACHABLE, which=("by_ip", "by_name"))  # down now
    feed.controls(1006.0, Reason.TCP_UNREACHABLE, which=("by_ip", "by_name"))
    records = feed.runtime.store.records
    by_ip = records[("control", "by_ip")]
    assert (by_ip.judged_total, by_ip.judged_failures) == (3, 2)
    resolver = records[("control", "resolver")]
    assert (resolver.judged_total, resolver.judged_failures) == (1, 0)
