"""Where the HTTP prober draws its phase lines, over real TLS on loopback: `processing` runs
from the request sent to the answer's first bytes (as blackbox's), so it holds the server's
delay; what follows, the rest of the headers and the body, is `transfer`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from exporter.model import Layer, Phase, Reason
from exporter.probes import ProbeEnv, run_probe
from exporter.sim.certs import LabCA
from exporter.sim.frontend import Fault, FrontendServer
from tests.conftest import assert_outcome, make_check

WWW = "www.facebook.com"
DELAY = 0.3
SLACK = 0.25  # a shared CI machine's event loop; the bounds below never rely on speed


def _check(frontend: FrontendServer):  # type: ignore[no-untyped-def]
    return make_check("http", url=f"https://{WWW}:{frontend.port}/", timeout=5.0)


async def test_processing_holds_the_servers_delay(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    frontend.state.set_fault(Fault(host=WWW, delay=DELAY))
    result = await run_probe(_check(frontend), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert DELAY <= result.phases[Phase.PROCESSING] < DELAY + SLACK, dict(result.phases)
    assert result.phases[Phase.TRANSFER] < SLACK, dict(result.phases)


async def test_a_slow_body_is_transfer_not_processing(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    # Headers at once, then each 512-byte chunk of the page after DELAY.
    frontend.state.set_fault(Fault(host=WWW, body_delay_per_chunk=DELAY))
    result = await run_probe(_check(frontend), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.phases[Phase.PROCESSING] < DELAY, dict(result.phases)
    assert result.phases[Phase.TRANSFER] >= DELAY, dict(result.phases)


@pytest.fixture
async def stalling_server(lab_ca: LabCA) -> AsyncIterator[int]:
    """Answers with its status line at once, then stalls DELAY before the other headers."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        await asyncio.sleep(DELAY)
        writer.write(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    context = lab_ca.context_for([WWW])
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_processing_ends_at_the_first_bytes_not_the_whole_headers(
    stalling_server: int, probe_env: ProbeEnv
) -> None:
    check = make_check("http", url=f"https://{WWW}:{stalling_server}/", timeout=5.0)
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.phases[Phase.PROCESSING] < DELAY, dict(result.phases)
    assert result.phases[Phase.TRANSFER] >= DELAY, dict(result.phases)
