"""The aiohttp application: its routes, their error guard and its lifecycle."""

import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSCloseCode, web
from redis.exceptions import ResponseError

from ticker import feed
from ticker.control import send_command
from ticker.core.control import parse_command, refusal, replay_status
from ticker.guard import (
    Policy,
    RateLimiter,
    RedactTokens,
    bearer,
    own_origins,
    token_matches,
)
from ticker.keys import GROUP, Keys
from ticker.redis_io import TRANSIENT
from ticker.server.connection import (
    MAX_CLIENT_MESSAGE,
    NOT_READY,
    CheckedWebSocket,
    Client,
    serve,
)
from ticker.server.hub import Hub
from ticker.server.source import RedisFeed
from ticker.server.sse import HEADERS as SSE_HEADERS
from ticker.server.sse import SseClient, parse_resume, parse_subscription
from ticker.server.sse import serve as serve_sse
from ticker.server.tuning import Tuning

log = logging.getLogger("ticker.serve")

# The page lives at the top of the repo (web/); TICKER_WEB_DIR points elsewhere when the
# package is installed away from its source, as in docker-compose.yml.
WEB_DIR = Path(os.environ.get("TICKER_WEB_DIR") or Path(__file__).resolve().parents[2] / "web")


HUB = web.AppKey("hub", Hub)
FEED = web.AppKey("feed", RedisFeed)
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


def _address(request: web.Request) -> str:
    return request.app[POLICY].client_address(
        request.remote, request.headers.get("X-Forwarded-For")
    )


def _admit(request: web.Request, check: Callable[[], Any]) -> web.Response | None:
    """The checks every feed connection passes (origin, token, its own request `check`,
    which raises `feed.BadRequest`, the client cap, the per-address rate); a refusal, or
    None to let it in."""
    hub, policy = request.app[HUB], request.app[POLICY]
    origin = request.headers.get("Origin")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    own = own_origins(request.scheme, sockname, request.host)
    if not policy.origin_allowed(origin, own):
        return _refuse(hub, "origin", 403, f"origin {origin} is not allowed")
    if not _feed_token_ok(request):
        return _refuse(hub, "token", 401, "this feed needs ?token=… or a Bearer token")
    try:
        check()
    except feed.BadRequest as exc:
        return _refuse(hub, "bad_request", 400, str(exc))
    if len(hub.clients) >= policy.max_clients:
        return _refuse(hub, "full", 503, "the server is at its connection limit; retry later")
    if not request.app[LIMITER].allow(_address(request)):
        return _refuse(hub, "rate", 429, "too many new connections from this address")
    return None


async def websocket(request: web.Request) -> web.StreamResponse:
    """`GET /ws`: the upgrade, then the client's whole life (`serve`) in this coroutine.

    Not `guarded`: what runs here stays on the stack of every idle client, so it catches
    its own errors (before the upgrade a JSON 500; after it, `serve` closes with 1011)."""
    try:
        hub = request.app[HUB]
        since, epoch = request.query.get("since"), request.query.get("epoch")
        refused = _admit(request, lambda: parse_resume(None, since, epoch))
        if refused is not None:
            return refused
        # No permessage-deflate: a compressor per connection costs ~125 KB of memory and
        # doubles the CPU per message (measured: the README's Measured table); clients
        # wanting fewer bytes subscribe to `totals` only.
        # Compression must stay off: the broadcast writes pre-built uncompressed frames.
        ws = CheckedWebSocket(
            heartbeat=hub.tuning.heartbeat, max_msg_size=MAX_CLIENT_MESSAGE, compress=False
        )
        writer = await ws.prepare(request)
    except web.HTTPException:
        raise
    except Exception:
        return _internal_error(request)
    transport = request.transport
    if transport is None:  # gone already
        return ws
    await serve(hub, Client(ws, writer, transport, hub.metrics, hub.tuning), since, epoch)
    return ws


async def event_stream(request: web.Request) -> web.StreamResponse:
    """`GET /sse`: the feed as Server-Sent Events (see `ticker.server.sse`)."""
    hub = request.app[HUB]
    q = request.query
    resume: tuple[str | None, str | None] = (None, None)
    sub = feed.Subscription()

    def check() -> None:
        nonlocal resume, sub
        resume = parse_resume(request.headers.get("Last-Event-ID"), q.get("since"), q.get("epoch"))
        sub = parse_subscription(q.get("topics"), q.get("max_rate"), q.get("delta"))

    refused = _admit(request, check)
    if refused is not None:
        return refused
    response = web.StreamResponse(headers=SSE_HEADERS)
    origin = request.headers.get("Origin")
    if origin is not None:  # allowed (checked above): let a page there read the stream
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    await response.prepare(request)
    transport = request.transport
    if transport is None:  # gone already
        return response
    c = SseClient(hub, response, transport, hub.metrics, hub.tuning)
    c.subscribe(sub)
    await serve_sse(hub, c, *resume)
    return response


async def api_state(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if not _feed_token_ok(request):
        return _json({"error": "token", "message": "this feed needs a token"}, 401)
    if not await hub.wait_loaded():
        return _json({"error": "not_ready", "message": NOT_READY.decode()}, 503)
    return _json({**hub.state, "position": hub.position, "epoch": hub.epoch})


async def api_replay(request: web.Request) -> web.Response:
    """Replay control: pause, resume, speed, seek. Needs the control token."""
    policy = request.app[POLICY]
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
    source = request.app[FEED]
    raw = await source.replay()
    why = refusal(replay_status(raw, int(time.time() * 1000)), command)
    if why is not None:
        return _json({"error": "refused", "message": why}, 409)
    await send_command(source.redis, source.keys, command)
    return _json({"accepted": command.wire()}, 202)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; a private feed's figures need its token (or the metrics token)."""
    hub, policy = request.app[HUB], request.app[POLICY]
    needed = policy.metrics_token or policy.feed_token
    given = request.query.get("token") or bearer(request.headers.get("Authorization"))
    if needed is not None and not token_matches(needed, given):
        return _json({"error": "token", "message": "/metrics needs the metrics token"}, 401)
    s = hub.state
    gauges: dict[str, tuple[str, float]] = {
        "ticker_clients": ("Connected clients (websocket and SSE).", len(hub.clients)),
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
    source = request.app[FEED]
    try:
        groups = await source.redis.xinfo_groups(source.keys.orders)
    except TRANSIENT:  # Redis is down: ticker_redis_up says so
        groups = []
    except ResponseError:  # no orders stream yet
        groups = []
    for g in groups:
        if g["name"] in (GROUP, GROUP.encode()):
            gauges["ticker_aggregator_lag_entries"] = (
                "Order entries not yet read by the aggregators.",
                float(g.get("lag") or 0),
            )
            gauges["ticker_aggregator_pending_entries"] = (
                "Order entries read but not yet committed.",
                float(g["pending"]),
            )
    on_sse = sum(isinstance(c, SseClient) for c in hub.clients)
    by_transport = (
        "# HELP ticker_clients_by_transport Connected clients by transport.\n"
        "# TYPE ticker_clients_by_transport gauge\n"
        f'ticker_clients_by_transport{{transport="ws"}} {len(hub.clients) - on_sse}\n'
        f'ticker_clients_by_transport{{transport="sse"}} {on_sse}\n'
    )
    return web.Response(
        text=hub.metrics.render(gauges) + by_transport,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def healthz(request: web.Request) -> web.Response:
    """200 while the feed is followed, else 503 saying why; words only, no figures."""
    problem = request.app[HUB].healthy()
    if problem is None:
        return _json({"ok": True, "status": "following the feed"})
    return _json({"ok": False, "status": problem}, 503)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """Errors reach clients as a short JSON body; the details go to the log only.

    A wrapper per HTTP handler, not an aiohttp middleware: a middleware stays on the stack
    of every upgraded websocket for its whole life (two coroutines, ~0.5 KB an idle
    client); the websocket handler guards its own handshake (`websocket`)."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            return _internal_error(request)

    return run


def _internal_error(request: web.Request) -> web.Response:
    log.exception("error serving %s", request.path)
    return _json({"error": "internal", "message": "internal error; see the server log"}, 500)


def make_app(
    redis_url: str,
    keys: Keys,
    tick_hz: float = 10.0,
    policy: Policy | None = None,
    tuning: Tuning | None = None,
    ingest_token: str | None = None,
) -> web.Application:
    """The aiohttp application; its background tasks start and stop with it.

    `tuning` defaults to `Tuning.from_env()` (TICKER_HEARTBEAT and the like). With an
    `ingest_token`, `POST /api/orders` takes real orders into the open live run
    (`ticker.ingest_http`)."""
    app = web.Application(client_max_size=64 * 1024)
    access = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    source = RedisFeed(redis_url, keys)
    app[FEED] = source
    app[HUB] = Hub(source, tick_hz, tuning or Tuning.from_env())
    app[POLICY] = policy or Policy.from_env()
    app[LIMITER] = RateLimiter(app[POLICY].connects_per_ip_per_s, app[POLICY].connect_burst)
    if ingest_token:
        from ticker import ingest_http

        ingest_http.setup(app, redis_url, keys, ingest_token, wrap=guarded)

    async def background(app: web.Application) -> AsyncIterator[None]:
        """The Redis client, the writer threads and the hub's tasks live while the app runs."""
        app[FEED].open()
        try:
            await app[HUB].start()
            try:
                yield
            finally:
                await app[HUB].stop()
        finally:
            await app[FEED].close()

    async def close_clients(app: web.Application) -> None:
        """On shutdown, before aiohttp waits for handlers: say goodbye with 1001 (an SSE
        stream just ends)."""
        for c in list(app[HUB].clients):
            c.close_reason = "shutdown"
            await c.goodbye(WSCloseCode.GOING_AWAY, b"server shutdown")

    app.on_shutdown.append(close_clients)
    app.cleanup_ctx.append(background)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/sse", guarded(event_stream), allow_head=False)
    app.router.add_get("/api/state", guarded(api_state))
    app.router.add_post("/api/replay", guarded(api_replay))
    app.router.add_get("/metrics", guarded(metrics))
    app.router.add_get("/healthz", guarded(healthz))
    app.router.add_get("/", guarded(index))
    app.router.add_static("/", WEB_DIR)
    return app
