"""An in-process server (the real app on a real port of 127.0.0.1) and a feed written by hand.

The aggregator is faked at its seam: tests write feed entries, the curve key and the replay
hash as the aggregator and the replay do, and watch what the server makes of them.
"""

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, web

from tests.conftest import UNIT
from ticker import feed
from ticker.guard import Policy
from ticker.keys import Keys
from ticker.server import HUB, Hub, Tuning, make_app


@dataclass
class Live:
    """A running server, its Redis (to write the feed) and an HTTP session."""

    url: str
    app: web.Application
    redis: "aioredis.Redis"
    keys: Keys
    http: ClientSession

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "ws"

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    async def write(self, fired: list[dict[str, Any]] | None = None, **state: Any) -> str:
        """Append a feed entry as the aggregator does; its position."""
        u = {**feed.EMPTY_STATE, "run": "r1", **state, "fired": fired or []}
        return (await self.redis.xadd(self.keys.feed, {"u": orjson.dumps(u)})).decode()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.get(self.url + path, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=body, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


class Proxy:
    """A TCP proxy to Redis that a test can cut (an outage) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.links:
            w.transport.abort()
        self.links.clear()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def running(
    redis_url: str,
    keys: Keys,
    policy: Policy | None = None,
    tuning: Tuning | None = None,
    server_redis_url: str | None = None,
    ready: bool = True,
) -> AsyncIterator[Live]:
    """The app on a free port; it reads Redis at `server_redis_url` (default: the same).
    With `ready` (the default) it is yielded once it follows the feed."""
    app = make_app(
        server_redis_url or redis_url,
        keys,
        policy=policy or Policy(),
        tuning=tuning or Tuning(send_threads=1),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    redis = aioredis.Redis.from_url(redis_url)
    async with ClientSession() as http:
        live = Live(f"http://127.0.0.1:{port}/", app, redis, keys, http)
        try:
            if ready:
                await eventually(lambda: live.hub.healthy() is None)
            yield live
        finally:
            await redis.aclose()
            # Bounded, so an app that cannot stop fails its test instead of hanging the run.
            await asyncio.wait_for(runner.cleanup(), 90 * UNIT)


@pytest.fixture
async def live(redis_url: str, namespace: str) -> AsyncIterator[Live]:
    async with running(redis_url, Keys(namespace)) as server:
        yield server


async def eventually(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    """Wait until `predicate()` is truthy (polling); its value."""
    deadline = time.monotonic() + timeout * UNIT
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        await asyncio.sleep(0.02)
    return value


async def recv(ws: Any, timeout: float = 10) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout * UNIT)))


async def recv_type(ws: Any, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next message of type `kind` (others are skipped)."""
    deadline = time.monotonic() + timeout * UNIT
    while True:
        msg = await recv(ws, max(0.01, deadline - time.monotonic()) / UNIT)
        if msg["type"] == kind:
            return msg


def now_ms() -> int:
    return int(time.time() * 1000)


def handshake(port: int) -> socket.socket:
    """A bare websocket client on a socket: the upgrade done, nothing read after it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10 * UNIT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
