"""The websocket server's I/O shell (aiohttp).

One task tails the feed stream (XREAD BLOCK) and keeps the latest state; another hands a
tick to every client at most `tick_hz` times a second; milestones go out at once. Each
message is encoded once per subscription kind and handed to every client's sender, which
holds only the newest tick plus the milestones not yet sent: a slow client gets the newest
state when it catches up, never delays anyone else, and is disconnected if it stays stuck.
"""

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from ticker import feed
from ticker.core.control import CONTROL_MAXLEN, parse_command
from ticker.guard import Policy, RateLimiter, bearer, token_matches
from ticker.keys import GROUP, Keys
from ticker.metrics import ServerMetrics
from ticker.redis_io import TRANSIENT, client

log = logging.getLogger("ticker.serve")

# The page lives at the top of the repo (web/); TICKER_WEB_DIR points elsewhere when the
# package is installed away from its source, as in docker-compose.yml.
WEB_DIR = Path(os.environ.get("TICKER_WEB_DIR") or Path(__file__).resolve().parent.parent / "web")
MAX_URGENT = 1_000  # milestones queued for one client before it is deemed stuck
MAX_CLIENT_MESSAGE = 4_096  # bytes; larger client messages close the connection with 1009
MAX_BAD_MESSAGES = 5  # malformed client messages answered with errors before close 1008
SEND_TIMEOUT = 10.0  # a send blocked this long means the client stopped reading
HEARTBEAT = 10.0  # ping interval; a connection with no pong is closed within 1.5x this


class Client:
    """One websocket connection, its subscription and what is waiting to be sent to it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        metrics: ServerMetrics,
    ) -> None:
        self.ws, self.transport, self.metrics = ws, transport, metrics
        self.sub = feed.Subscription()
        self.floor: feed.PositionKey = (0, 0, 0)  # positions at or below this were sent
        self.latest_tick: tuple[feed.PositionKey, bytes] | None = None
        self.urgent: deque[tuple[feed.PositionKey, bytes]] = deque()
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once the snapshot (or resume backlog) is sent
        self.last_tick_at = 0.0
        self.close_reason = "closed"

    def offer_tick(self, key: feed.PositionKey, text: bytes) -> None:
        if self.latest_tick is not None:
            self.metrics.ticks_coalesced += 1
        self.latest_tick = (key, text)  # coalesce: only the newest tick is kept
        self.wake.set()

    def offer_urgent(self, key: feed.PositionKey, text: bytes) -> bool:
        if len(self.urgent) >= MAX_URGENT:
            return False
        self.urgent.append((key, text))
        self.wake.set()
        return True

    async def send(self, text: bytes) -> None:
        """Send one encoded JSON text frame (encoded once for every client that gets it)."""
        async with asyncio.timeout(SEND_TIMEOUT):  # cheaper than wait_for: no extra task
            await self.ws.send_frame(text, WSMsgType.TEXT)
        self.metrics.messages_sent += 1
        self.metrics.bytes_sent += len(text)

    async def send_loop(self) -> None:
        await self.ready.wait()
        try:
            while not self.ws.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.urgent:
                    key, text = self.urgent.popleft()
                    if key > self.floor:
                        await self.send(text)
                if self.latest_tick is None:
                    continue
                wait = self.last_tick_at + 1 / self.sub.max_rate - time.monotonic()
                if wait > 0:  # the client's own rate limit; newer ticks replace this one
                    with contextlib.suppress(TimeoutError):  # a milestone cuts the wait short
                        await asyncio.wait_for(self.wake.wait(), wait)
                    self.wake.set()
                    continue
                (key, text), self.latest_tick = self.latest_tick, None
                if key > self.floor:
                    self.floor = key
                    self.last_tick_at = time.monotonic()
                    await self.send(text)
        except (TimeoutError, ConnectionResetError):
            log.warning("disconnecting a client that stopped reading")
            self.drop("slow")

    def drop(self, reason: str) -> None:
        """Cut a client that stopped reading: a close handshake would wait on it too."""
        self.close_reason = reason
        self.metrics.updates_dropped += len(self.urgent) + (self.latest_tick is not None)
        self.urgent.clear()
        if self.transport is not None:
            self.transport.abort()


class Hub:
    """The latest state from the feed, the replay's state, and the connected clients."""

    def __init__(self, redis_url: str, keys: Keys, tick_hz: float = 10.0) -> None:
        self.keys, self.tick_interval = keys, 1.0 / tick_hz
        self.redis = client(redis_url)
        self.state: dict[str, Any] = {**feed.EMPTY_STATE, "replay": None}
        self.position = "0-0"
        self.epoch = ""
        self.replay: dict[str, Any] | None = None
        self.clients: set[Client] = set()
        self.metrics = ServerMetrics()
        self.dirty = asyncio.Event()  # the state changed since the last tick went out
        self.redis_ok = False

    async def load(self) -> None:
        raw = await self.redis.get(self.keys.epoch)
        self.epoch = raw.decode() if raw else ""
        last = await self.redis.xrevrange(self.keys.feed, count=1)
        if last:
            entry_id, fields = last[0]
            self.state, _ = feed.parse_entry(fields)
            self.state["replay"] = self.replay
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

    async def follow_replay(self) -> None:
        """Poll the simulator's replay state (a small hash) a few times a second."""
        while True:
            await asyncio.sleep(0.25)
            try:
                raw = await self.redis.hget(self.keys.replay, "state")
            except TRANSIENT:
                continue
            replay = orjson.loads(raw) if raw else None
            if replay != self.replay:
                self.replay = replay
                self.state["replay"] = replay
                self.dirty.set()

    def on_entry(self, position: str, fields: dict[bytes, bytes]) -> None:
        state, fired = feed.parse_entry(fields)
        state["replay"] = self.replay
        self.state, self.position = state, position
        self.dirty.set()
        for f, at in zip(fired, feed.milestone_positions(position, len(fired)), strict=True):
            self.broadcast_urgent(feed.position_key(at), orjson.dumps(feed.milestone(f, at)))

    def broadcast_urgent(self, key: feed.PositionKey, text: bytes) -> None:
        for c in list(self.clients):
            if not c.offer_urgent(key, text):
                self.clients.discard(c)
                c.drop("stuck")

    async def ticker(self) -> None:
        """Send a tick as soon as the state changes, but at most `tick_hz` times a second."""
        last = 0.0
        while True:
            await self.dirty.wait()
            wait = last + self.tick_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.dirty.clear()
            last = time.monotonic()
            started = time.perf_counter()
            key = feed.position_key(self.position)
            encoded: dict[frozenset[str], bytes] = {}  # once per subscription kind
            for c in self.clients:
                text = encoded.get(c.sub.topics)
                if text is None:
                    msg = feed.tick(feed.only(self.state, c.sub.topics), self.position)
                    text = encoded[c.sub.topics] = orjson.dumps(msg)
                c.offer_tick(key, text)
            self.metrics.broadcasts += 1
            self.metrics.broadcast_seconds_sum += time.perf_counter() - started

    async def backlog(self, since: str) -> list[tuple[str, dict[bytes, bytes]]] | None:
        """The feed entries from `since` on (its own entry too when `since` names only part
        of it), or None when some of them are gone."""
        entry, _, part = since.partition(".")
        exists = await self.redis.xrange(self.keys.feed, entry, entry)
        if not exists:
            return None
        entries = await self.redis.xrange(self.keys.feed, entry if part else f"({entry}", "+")
        return [(i.decode(), f) for i, f in entries]


HUB = web.AppKey("hub", Hub)
POLICY = web.AppKey("policy", Policy)
LIMITER = web.AppKey("limiter", RateLimiter)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _refuse(hub: Hub, reason: str, status: int, message: str) -> web.Response:
    hub.metrics.connections_refused[reason] += 1
    return _json({"error": reason, "message": message}, status)


def _feed_token_ok(request: web.Request) -> bool:
    policy = request.app[POLICY]
    if policy.feed_token is None:
        return True
    given = request.query.get("token") or bearer(request.headers.get("Authorization"))
    return token_matches(policy.feed_token, given)


async def websocket(request: web.Request) -> web.StreamResponse:
    hub, policy = request.app[HUB], request.app[POLICY]
    origin = request.headers.get("Origin")
    if not policy.origin_allowed(origin, request.host, request.scheme):
        return _refuse(hub, "origin", 403, f"origin {origin} is not allowed")
    if not _feed_token_ok(request):
        return _refuse(hub, "token", 401, "this feed needs ?token=… or a Bearer token")
    if len(hub.clients) >= policy.max_clients:
        return _refuse(hub, "full", 503, "the server is at its connection limit; retry later")
    if not request.app[LIMITER].allow(request.remote or "?"):
        return _refuse(hub, "rate", 429, "too many new connections from this address")
    # No permessage-deflate: a compressor per connection costs ~125 KB of memory and
    # doubles the CPU per message (measured: docs/protocol.md); clients wanting fewer bytes
    # subscribe to `totals` only.
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_CLIENT_MESSAGE, compress=False)
    await ws.prepare(request)
    c = Client(ws, request.transport, hub.metrics)
    hub.clients.add(c)
    sender = asyncio.create_task(c.send_loop())
    try:
        await c.send(orjson.dumps(feed.hello(hub.epoch)))
        await _greet(hub, c, request.query.get("since"), request.query.get("epoch"))
        c.ready.set()
        await _read_requests(c)
    except (TimeoutError, ConnectionResetError):
        c.close_reason = "slow"
    finally:
        hub.clients.discard(c)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            c.close_reason = "too_big"
        hub.metrics.disconnects[c.close_reason] += 1
    return ws


async def _greet(hub: Hub, c: Client, since: str | None, epoch: str | None) -> None:
    """Send the snapshot, or on resume the milestones missed and then the snapshot."""
    recovered: bool | None = None
    state, position = hub.state, hub.position
    if since is not None:
        recovered = False
        try:
            seen = feed.position_key(since)
            backlog = None if epoch not in (None, hub.epoch) else await hub.backlog(since)
        except feed.BadRequest:
            backlog = None
        if backlog is not None:
            recovered = True
            position = since
            for entry_position, fields in backlog:
                state, fired = feed.parse_entry(fields)
                state["replay"] = hub.replay
                position = entry_position
                at = feed.milestone_positions(entry_position, len(fired))
                for f, pos in zip(fired, at, strict=True):
                    if feed.position_key(pos) > seen:
                        await c.send(orjson.dumps(feed.milestone(f, pos)))
            if not backlog:
                state = hub.state
    c.floor = feed.position_key(position)
    await c.send(orjson.dumps(feed.snapshot(state, position, hub.epoch, recovered)))


async def _read_requests(c: Client) -> None:
    bad = 0
    async for msg in c.ws:
        if msg.type == WSMsgType.TEXT:
            try:
                c.sub = feed.parse_request(msg.data)
                c.wake.set()
            except feed.BadRequest as exc:
                bad += 1
                await c.send(orjson.dumps(feed.error("bad_request", str(exc))))
                if bad >= MAX_BAD_MESSAGES:
                    c.close_reason = "bad_requests"
                    await c.ws.close(
                        code=WSCloseCode.POLICY_VIOLATION, message=b"too many malformed messages"
                    )
        elif msg.type == WSMsgType.BINARY:
            c.close_reason = "binary"
            await c.ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
        elif msg.type == WSMsgType.ERROR:
            c.close_reason = "error"
            break


async def api_state(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if not _feed_token_ok(request):
        return _json({"error": "token", "message": "this feed needs a token"}, 401)
    return _json({**hub.state, "position": hub.position, "epoch": hub.epoch})


async def api_replay(request: web.Request) -> web.Response:
    """Replay control: pause, resume, speed, seek. Needs the control token."""
    hub, policy = request.app[HUB], request.app[POLICY]
    given = bearer(request.headers.get("Authorization"))
    if given is None:
        return _json(
            {"error": "unauthorized", "message": "send Authorization: Bearer <control token>"}, 401
        )
    if policy.control_token is None or not token_matches(policy.control_token, given):
        return _json({"error": "forbidden", "message": "wrong control token"}, 403)
    try:
        body = await request.json(loads=orjson.loads)
        command = parse_command(body)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return _json({"error": "bad_request", "message": str(exc)}, 400)
    await hub.redis.xadd(
        hub.keys.control, {"c": orjson.dumps(command)}, maxlen=CONTROL_MAXLEN, approximate=True
    )
    return _json({"accepted": command}, 202)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    s = hub.state
    gauges: dict[str, tuple[str, float]] = {
        "ticker_clients": ("Connected websocket clients.", len(hub.clients)),
        "ticker_feed_lag_seconds": (
            "Wall time since the newest feed entry was written.",
            max(0.0, time.time() - feed.position_key(hub.position)[0] / 1000)
            if hub.position != "0-0"
            else 0.0,
        ),
        "ticker_gmv_fen": ("GMV of the current replay, in fen.", s.get("gmv_fen", 0)),
        "ticker_orders": ("Orders of the current replay.", s.get("orders", 0)),
        "ticker_dead_letters": ("Malformed order entries set aside.", s.get("dead_letters", 0)),
        "ticker_duplicates": ("Order entries seen twice and counted once.", s.get("duplicates", 0)),
        "ticker_redis_up": ("1 while the feed's Redis answers.", float(hub.redis_ok)),
    }
    with contextlib.suppress(*TRANSIENT, Exception):
        for g in await hub.redis.xinfo_groups(hub.keys.orders):
            if g["name"] in (GROUP, GROUP.encode()):
                gauges["ticker_aggregator_lag_entries"] = (
                    "Order entries not yet read by the aggregators.",
                    float(g.get("lag") or 0),
                )
                gauges["ticker_aggregator_pending_entries"] = (
                    "Order entries read but not yet committed.",
                    float(g["pending"]),
                )
    return web.Response(
        text=hub.metrics.render(gauges),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = {
        "ok": hub.redis_ok,
        "redis": "up" if hub.redis_ok else "down",
        "position": hub.position,
        "clients": len(hub.clients),
    }
    return _json(body, 200 if hub.redis_ok else 503)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


@web.middleware
async def no_tracebacks(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Errors reach clients as a short JSON body; the details go to the log only."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("error serving %s", request.path)
        return _json({"error": "internal", "message": "internal error; see the server log"}, 500)


def make_app(
    redis_url: str, keys: Keys, tick_hz: float = 10.0, policy: Policy | None = None
) -> web.Application:
    """The aiohttp application; its background tasks start and stop with it."""
    app = web.Application(middlewares=[no_tracebacks], client_max_size=64 * 1024)
    app[HUB] = Hub(redis_url, keys, tick_hz)
    app[POLICY] = policy or Policy.from_env()
    app[LIMITER] = RateLimiter(app[POLICY].connects_per_ip_per_s, app[POLICY].connect_burst)

    async def background(app: web.Application) -> AsyncIterator[None]:
        hub = app[HUB]
        tasks = [asyncio.create_task(t) for t in (hub.tail(), hub.ticker(), hub.follow_replay())]
        yield
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.redis.aclose()

    async def close_clients(app: web.Application) -> None:
        """On shutdown, before aiohttp waits for handlers: say goodbye with 1001."""
        for c in list(app[HUB].clients):
            c.close_reason = "shutdown"
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"), 2
                )

    app.on_shutdown.append(close_clients)
    app.cleanup_ctx.append(background)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/state", api_state)
    app.router.add_post("/api/replay", api_replay)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    app.router.add_static("/", WEB_DIR)
    return app
