"""`GET /sse`: the feed as Server-Sent Events, for clients that cannot hold a websocket.

The same messages as `/ws`, each one event: `event:` its type, `data:` its JSON (one line),
and for the messages that have a position (snapshot, tick, milestone) `id: <epoch>/<position>`.
A browser's `EventSource` sends the last id back as `Last-Event-ID` when it reconnects, and
the server resumes from it exactly as `/ws?since=<position>&epoch=<epoch>` does.

An SSE client is a `Client` whose messages always go through its own sender (never the
broadcast's raw websocket frames): the same outbox, so ticks coalesce, milestones queue in
order, and a client that stops reading is dropped. The sender also writes a comment
(`: ping`) after `heartbeat` seconds of silence, so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from ticker import feed
from ticker.metrics import ServerMetrics
from ticker.server.connection import Client, greet
from ticker.server.outbox import QUEUE, Route
from ticker.server.tuning import Tuning

if TYPE_CHECKING:
    from ticker.server.hub import Hub

log = logging.getLogger("ticker.serve")

RETRY_MS = 1_000  # the `retry:` hint: EventSource waits this long before it reconnects
PING = b": ping\n\n"
CHECK_EVERY = 1.0  # seconds: how often a quiet sender looks whether its client went
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


def parse_resume(
    last_event_id: str | None, since: str | None, epoch: str | None
) -> tuple[str | None, str | None]:
    """Where a client resumes from: `Last-Event-ID` (`<epoch>/<position>`, or a bare
    position) wins over `?since=` and `?epoch=`. Raises `feed.BadRequest`."""
    if last_event_id:
        head, slash, position = last_event_id.rpartition("/")
        since = position
        if slash:
            epoch = head
    if since is not None:
        feed.position_key(since)
    if epoch is not None and len(epoch) > feed.MAX_EPOCH:
        raise feed.BadRequest(f"epoch is at most {feed.MAX_EPOCH} characters")
    return since, epoch


DELTA_FLAGS = {"1": True, "true": True, "0": False, "false": False}  # `?delta=`


def parse_subscription(
    topics: str | None, max_rate: str | None, delta: str | None = None
) -> feed.Subscription:
    """`?topics=totals,top&max_rate=2&delta=1`, checked as a websocket `subscribe` message is."""
    request: dict[str, object] = {"type": "subscribe"}
    if delta is not None:
        if delta not in DELTA_FLAGS:
            raise feed.BadRequest("delta must be 1 or 0")
        request["delta"] = DELTA_FLAGS[delta]
    if topics is not None:
        request["topics"] = [t for t in topics.split(",") if t]
    if max_rate is not None:
        try:
            request["max_rate"] = float(max_rate)
        except ValueError:
            raise feed.BadRequest("max_rate must be a number of updates per second") from None
        if request["max_rate"] != request["max_rate"]:  # NaN
            raise feed.BadRequest("max_rate must be a number of updates per second")
    return feed.parse_request(orjson.dumps(request).decode())


def _head(text: bytes) -> tuple[bytes, bytes | None]:
    """A message's type and position (None: it has none), read from the start of its JSON
    (`feed` builds every message as `{"type": …, "position": …, …}`)."""
    prefix = b'{"type":"'
    if text.startswith(prefix):
        end = text.find(b'"', len(prefix))
        kind = text[len(prefix) : end]
        rest = text[end + 1 : end + 14]
        if rest == b',"position":"':
            start = end + 14
            return kind, text[start : text.find(b'"', start)]
        return kind, None
    msg = orjson.loads(text)  # not built by `feed`: read it whole
    position = msg.get("position")
    return str(msg["type"]).encode(), None if position is None else str(position).encode()


def event(text: bytes, epoch: str) -> bytes:
    """One message as an SSE event; positioned messages carry `id: <epoch>/<position>`."""
    kind, position = _head(text)
    ident = b"" if position is None else b"id: " + epoch.encode() + b"/" + position + b"\n"
    return b"event: " + kind + b"\n" + ident + b"data: " + text + b"\n\n"


class SseClient(Client):
    """One SSE connection: its outbox's messages written as events by its own sender."""

    __slots__ = ("gone", "heartbeat", "hub", "last_write", "response", "started", "wake")

    def __init__(
        self,
        hub: Hub,
        response: web.StreamResponse,
        transport: asyncio.Transport,
        metrics: ServerMetrics,
        tuning: Tuning,
    ) -> None:
        self.hub, self.response = hub, response
        self.attach(transport, metrics, tuning)
        self.fd = -1  # never written raw: the broadcast's frames are websocket frames
        self.heartbeat = tuning.heartbeat
        self.gone = asyncio.Event()  # the stream ends: shutdown, a feed reset, or dropped
        self.last_write = time.monotonic()
        # Its sender runs for the whole stream (it writes the heartbeat comments too).
        self.wake = asyncio.Event()  # something was queued, or the rate changed
        self.started = asyncio.Event()  # set once the snapshot (or resume backlog) is sent

    def kick(self) -> None:
        self.wake.set()

    def greeted(self) -> None:
        self.started.set()
        super().greeted()

    def route(self, key: feed.PositionKey | None) -> Route:
        return QUEUE

    def route_tick(self, key: feed.PositionKey, now: float) -> Route:
        return QUEUE

    def closed(self) -> bool:
        return self.gone.is_set() or self.transport.is_closing()

    async def write(self, data: bytes) -> None:
        """Write bytes once the connection has taken what it had; a write blocked for
        `send_timeout` raises TimeoutError (the client stopped reading)."""
        self.outbox.sending = True
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.response.write(data)
        finally:
            self.outbox.sending = False
        self.last_write = time.monotonic()

    async def send(self, text: bytes) -> None:
        await self.write(event(text, self.hub.epoch))
        self.metrics.messages_sent += 1
        self.metrics.bytes_sent += len(text)

    async def send_loop(self) -> None:
        """Send what the outbox gives, in its order; a comment after a silence; notice a
        client that went (its transport closing) within CHECK_EVERY seconds."""
        await self.started.wait()
        try:
            while not self.closed():
                timeout = min(CHECK_EVERY, self.heartbeat)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # not wait_for: see connection.close
                        await self.wake.wait()
                self.wake.clear()
                wait = await self.send_ready()
                if wait is not None:  # the rate limit holds a tick back; a milestone cuts in
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self.wake.wait()
                    self.wake.set()
                if time.monotonic() - self.last_write >= self.heartbeat and not self.closed():
                    await self.write(PING)
        except (TimeoutError, ConnectionResetError):
            if not self.transport.is_closing():
                log.warning("disconnecting an SSE client that stopped reading")
                self.drop("slow")
        finally:
            self.gone.set()

    async def goodbye(self, code: int, message: bytes) -> None:
        """End the stream (shutdown, a feed reset): EventSource reconnects and resumes."""
        self.gone.set()

    def drop(self, reason: str) -> None:
        super().drop(reason)
        self.gone.set()


async def serve(hub: Hub, c: SseClient, since: str | None, epoch: str | None) -> None:
    """Run one SSE client until its stream ends: the retry hint, hello, the greeting, then
    what its sender sends; count why it went. A server that has not read the feed yet
    ends the stream at once: EventSource reconnects after the retry hint."""
    if not await hub.wait_loaded():
        hub.metrics.disconnects["not_ready"] += 1
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            await c.write(f"retry: {RETRY_MS}\n\n".encode())
        return
    hub.clients.add(c)
    sender = asyncio.create_task(c.send_loop())
    try:
        await c.write(f"retry: {RETRY_MS}\n\n".encode())
        await c.send(feed.hello(hub.epoch).encode())
        await greet(hub, c, since, epoch)
        c.greeted()
        await c.gone.wait()
    except (TimeoutError, ConnectionResetError):
        c.close_reason = "slow" if not c.transport.is_closing() else "closed"
    except Exception:  # the stream has started: no HTTP 500 now; it ends, the client resumes
        log.exception("error on an SSE connection")
        c.close_reason = "error"
    finally:
        c.outbox.live = False
        hub.clients.discard(c)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        if c.close_reason == "slow":
            c.transport.abort()
        hub.metrics.disconnects[c.close_reason] += 1
