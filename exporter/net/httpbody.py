"""An aiohttp body read under a size cap, for the feeds (the http prober caps its own, in
probes.curl): a broken or hostile server cannot make us hold more than `cap` bytes, whatever
its Content-Length says."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp


async def read_capped(
    response: aiohttp.ClientResponse, cap: int, too_large: Callable[[str], Exception]
) -> bytes:
    """The whole body; raises too_large(detail) as soon as it is known to exceed `cap`."""
    if response.content_length is not None and response.content_length > cap:
        raise too_large(f"Content-Length {response.content_length} exceeds {cap} bytes")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise too_large(f"body exceeds {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
