"""What an idle websocket client keeps alive in the server (issue 16: ≤ 12 KB an idle
client). Bytes depend on the allocator and the Python build; what is counted here does not:
the coroutines on an idle client's stack and the objects the collector tracks per client.
`python -m ticker.bench.fanout` measures the bytes (PSS of the server per idle client)."""

import asyncio
import gc
import socket
import tracemalloc
from collections.abc import Iterator
from types import CoroutineType
from typing import Any

from tests.server.conftest import Live, eventually, handshake
from ticker.server.connection import Client

CLIENTS = 40


def stack(coro: Any) -> Iterator[Any]:
    """The coroutines a task's coroutine is awaiting, outermost first."""
    while isinstance(coro, CoroutineType):
        yield coro
        coro = coro.cr_await


async def idle_clients(live: Live, n: int) -> list[socket.socket]:
    port = int(live.url.rsplit(":", 1)[1].strip("/"))
    before = len(live.hub.clients)
    socks = [await asyncio.to_thread(handshake, port) for _ in range(n)]
    # Greeted: the snapshot is sent and the handler waits for the client's next request.
    await eventually(
        lambda: (
            len(live.hub.clients) == before + n
            and all(
                isinstance(c, Client) and c.ready and c.sender is None for c in live.hub.clients
            )
        )
    )
    return socks


async def test_an_idle_client_waits_in_serve_with_no_middleware_on_its_stack(live: Live) -> None:
    """Every coroutine on an idle client's stack lives as long as it does (~0.25 KB each,
    10,000 clients a server): its handler is `websocket` → `serve` → aiohttp's read, with
    no middleware in between and no coroutine of its own for the reading (`async for`'s
    `__anext__`, a `read_requests`)."""
    socks = await idle_clients(live, 1)
    try:
        stacks = [
            [c.cr_code.co_name for c in stack(t.get_coro())]
            for t in asyncio.all_tasks()
            if any(c.cr_code.co_name == "serve" for c in stack(t.get_coro()))
        ]
        assert len(stacks) == 1, stacks
        names = stacks[0]
        ours = names[names.index("websocket") :]
        assert ours[:3] == ["websocket", "serve", "receive"], names
        assert not {"impl", "__anext__", "read_requests"} & set(names), names
    finally:
        for s in socks:
            s.close()


async def test_bytes_allocated_per_idle_client_stay_below_a_bound(live: Live) -> None:
    """The bytes Python allocated for an idle websocket client and still holds (tracemalloc:
    the sizes asked for, no allocator overhead; the test's own sockets included): aiohttp's
    request, response, frame reader and writer, the coroutines, the transport, the
    `Client`. 14.2-14.7 KB in this test with aiohttp 3.14 on Python 3.11, against 15.9 KB
    before the middleware, `read_requests`, `__anext__` and aiohttp's empty request deque
    left it."""
    warm = await idle_clients(live, 2)  # first-use caches (routes, parsers)
    socks: list[socket.socket] = []
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        socks = await idle_clients(live, CLIENTS)
        gc.collect()
        per_client = (tracemalloc.get_traced_memory()[0] - before) / CLIENTS
        assert per_client <= 15_500, per_client
    finally:
        tracemalloc.stop()
        for s in warm + socks:
            s.close()
