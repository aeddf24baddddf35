"""libcurl's marks into blackbox's phases (probes.curl.split_phases): pure, no network."""

from __future__ import annotations

import pytest

from exporter.model import Phase
from exporter.probes.curl import Marks, split_phases

# A whole HTTPS exchange: connected at 1 ms, handshaken at 4, request out at 4.1, first
# byte at 9, done at 10.
WHOLE = Marks(connected=0.001, handshaken=0.004, request_sent=0.0041, first_byte=0.009, total=0.010)


def test_a_finished_exchange_has_every_phase_as_blackbox_times_them() -> None:
    done, current, _ = split_phases(WHOLE, tls=True, finished=True)
    assert current is None
    assert done == pytest.approx(
        {Phase.CONNECT: 0.001, Phase.TLS: 0.003, Phase.PROCESSING: 0.0049, Phase.TRANSFER: 0.001}
    )


def test_plain_http_has_no_tls_phase() -> None:
    marks = Marks(
        connected=0.001, handshaken=0.0, request_sent=0.0011, first_byte=0.005, total=0.006
    )
    done, current, _ = split_phases(marks, tls=False, finished=True)
    assert (set(done), current) == ({Phase.CONNECT, Phase.PROCESSING, Phase.TRANSFER}, None)


@pytest.mark.parametrize(
    ("marks", "phase", "since", "done"),
    [
        # libcurl stamps later marks on a refused connect: they must not count.
        (Marks(0.0, 0.0, 0.0006, 0.0006, 0.0006), Phase.CONNECT, 0.0, set()),
        (Marks(0.001, 0.0, 0.0, 0.0, 0.0), Phase.TLS, 0.001, {Phase.CONNECT}),
        # Processing runs from the request sent, as when it is done.
        (
            Marks(0.001, 0.004, 0.0041, 0.0, 0.0),
            Phase.PROCESSING,
            0.0041,
            {Phase.CONNECT, Phase.TLS},
        ),
        (WHOLE, Phase.TRANSFER, 0.009, {Phase.CONNECT, Phase.TLS, Phase.PROCESSING}),
    ],
)
def test_a_stopped_exchange_names_the_phase_in_progress_and_when_it_began(
    marks: Marks, phase: Phase, since: float, done: set[Phase]
) -> None:
    spent, current, began = split_phases(marks, tls=True, finished=False)
    assert (set(spent), current) == (done, phase)
    assert began == pytest.approx(since)
