"""The websocket server's I/O shell (aiohttp).

One task tails the feed stream (XREAD BLOCK) and keeps the latest state; another sends
ticks to every client at most `tick_hz` times a second. Milestones go out at once. Each
message is encoded once and handed to every client's sender, which holds only the latest
tick plus the milestones not yet sent, so a slow client gets the newest state when it
catches up and never delays anyone else.
"""

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ticker import feed
from ticker.keys import Keys
from ticker.redis_io import TRANSIENT, client

log = logging.getLogger("ticker.serve")

# The page lives at the top of the repo (web/); TICKER_WEB_DIR points elsewhere when the
# package is installed away from its source, as in docker-compose.yml.
WEB_DIR = Path(os.environ.get("TICKER_WEB_DIR") or Path(__file__).resolve().parent.parent / "web")
MAX_URGENT = 1_000  # milestones queued for one client before it is deemed stuck
MAX_CLIENT_MESSAGE = 4_096


class Client:
    """One websocket connection and what is waiting to be sent to it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.latest_tick: str | None = None
        self.urgent: deque[str] = deque()
        self.wake = asyncio.Event()

    def offer_tick(self, text: str) -> None:
        self.latest_tick = text  # coalesce: only the newest tick is kept
        self.wake.set()

    def offer_urgent(self, text: str) -> bool:
        if len(self.urgent) >= MAX_URGENT:
            return False
        self.urgent.append(text)
        self.wake.set()
        return True

    async def send_loop(self) -> None:
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            while self.urgent:
                await self.ws.send_str(self.urgent.popleft())
            if self.latest_tick is not None:
                text, self.latest_tick = self.latest_tick, None
                await self.ws.send_str(text)


class Hub:
    """The latest state from the feed, and the connected clients."""

    def __init__(self, redis_url: str, keys: Keys, tick_hz: float = 10.0) -> None:
        self.redis_url, self.keys, self.tick_interval = redis_url, keys, 1.0 / tick_hz
        self.redis = client(redis_url)
        self.state: dict[str, Any] = dict(feed.EMPTY_STATE)
        self.position = "0-0"
        self.epoch = ""
        self.clients: set[Client] = set()
        self.closing: set[asyncio.Task[bool]] = set()
        self.dirty = False
        self.redis_ok = False

    async def load(self) -> None:
        raw = await self.redis.get(self.keys.epoch)
        self.epoch = raw.decode() if raw else ""
        last = await self.redis.xrevrange(self.keys.feed, count=1)
        if last:
            entry_id, fields = last[0]
            self.state, _ = feed.parse_entry(fields)
            self.position = entry_id.decode()
        self.redis_ok = True

    async def tail(self) -> None:
        """Follow the feed stream forever, reconnecting after Redis outages."""
        delay = 0.1
        while True:
            try:
                await self.load()
                delay = 0.1
                while True:
                    reply = await self.redis.xread(
                        {self.keys.feed: self.position}, block=1000, count=500
                    )
                    for entry_id, fields in reply[0][1] if reply else []:
                        self.on_entry(entry_id.decode(), fields)
                    if not self.epoch:
                        raw = await self.redis.get(self.keys.epoch)
                        self.epoch = raw.decode() if raw else ""
            except TRANSIENT as exc:
                self.redis_ok = False
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def on_entry(self, position: str, fields: dict[bytes, bytes]) -> None:
        state, fired = feed.parse_entry(fields)
        self.state, self.position, self.dirty = state, position, True
        for f in fired:
            self.broadcast_urgent(orjson.dumps(feed.milestone(f, position)).decode())

    def broadcast_urgent(self, text: str) -> None:
        for c in list(self.clients):
            if not c.offer_urgent(text):
                log.warning("closing a client stuck with %d unsent milestones", MAX_URGENT)
                self.clients.discard(c)
                task = asyncio.create_task(c.ws.close(code=1008, message=b"too slow"))
                self.closing.add(task)
                task.add_done_callback(self.closing.discard)

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            if self.dirty:
                self.dirty = False
                text = orjson.dumps(feed.tick(self.state, self.position)).decode()
                for c in self.clients:
                    c.offer_tick(text)

    def snapshot_text(self) -> str:
        return orjson.dumps(feed.snapshot(self.state, self.position, self.epoch)).decode()


HUB = web.AppKey("hub", Hub)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_CLIENT_MESSAGE)
    await ws.prepare(request)
    await ws.send_str(orjson.dumps(feed.hello(hub.epoch)).decode())
    await ws.send_str(hub.snapshot_text())
    c = Client(ws)
    hub.clients.add(c)
    sender = asyncio.create_task(c.send_loop())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(
                    orjson.dumps(
                        feed.error("unsupported", "this feed takes no messages yet")
                    ).decode()
                )
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.clients.discard(c)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return ws


async def api_state(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = {**hub.state, "position": hub.position, "epoch": hub.epoch}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = {
        "ok": hub.redis_ok,
        "redis": "up" if hub.redis_ok else "down",
        "position": hub.position,
        "clients": len(hub.clients),
    }
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        status=200 if hub.redis_ok else 503,
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


def make_app(redis_url: str, keys: Keys, tick_hz: float = 10.0) -> web.Application:
    """The aiohttp application; its background tasks start and stop with it."""
    app = web.Application()
    app[HUB] = Hub(redis_url, keys, tick_hz)

    async def background(app: web.Application) -> AsyncIterator[None]:
        hub = app[HUB]
        tasks = [asyncio.create_task(hub.tail()), asyncio.create_task(hub.ticker())]
        yield
        for t in tasks:
            t.cancel()
        for c in list(hub.clients):
            await c.ws.close(code=1001, message=b"server shutdown")
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.redis.aclose()

    app.cleanup_ctx.append(background)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    app.router.add_static("/", WEB_DIR)
    return app
