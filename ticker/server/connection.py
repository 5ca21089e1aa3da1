"""One websocket client: its connection's I/O, its greeting and the requests it sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from ticker import feed
from ticker.guard import MaskCheck
from ticker.metrics import ServerMetrics
from ticker.server.outbox import Outbox, Payload, Route
from ticker.server.ticks import TickVersion
from ticker.server.tuning import Tuning

if TYPE_CHECKING:
    from ticker.server.hub import Hub

log = logging.getLogger("ticker.serve")

MAX_CLIENT_MESSAGE = 4_096  # bytes; larger client messages close the connection with 1009
MAX_BAD_MESSAGES = 5  # malformed client messages answered with errors before close 1008
# Where a websocket's messages end (what ends `async for msg in ws`).
CLOSED = frozenset((WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED))
# Every client starts on the same (frozen) subscription: no object of its own until it asks.
DEFAULT_SUBSCRIPTION = feed.Subscription()
NOT_READY = b"the server has not read the feed yet; retry"


class Client:
    """One websocket connection: it moves the bytes its `Outbox` decides on.

    An idle client costs memory only (~10,000 of them per server): no task of its own while
    its outbox is empty. Its sender task starts when a message is queued for it (`kick`)
    and ends when the outbox is empty again."""

    __slots__ = (
        "base",
        "close_reason",
        "fd",
        "metrics",
        "nudge",
        "outbox",
        "ready",
        "send_timeout",
        "sender",
        "sub",
        "transport",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        writer: AbstractStreamWriter,
        transport: asyncio.Transport,
        metrics: ServerMetrics,
        tuning: Tuning,
    ) -> None:
        self.ws, self.writer = ws, writer
        self.attach(transport, metrics, tuning)

    def attach(self, transport: asyncio.Transport, metrics: ServerMetrics, tuning: Tuning) -> None:
        """Take the connection's transport; set up the outbox and the sender's events."""
        self.transport, self.metrics = transport, metrics
        self.send_timeout = tuning.send_timeout
        # Above send_buffer the transport pauses its protocol, so `writer.drain()` (the
        # sender's wait) and the outbox's routes agree on what "full" means.
        transport.set_write_buffer_limits(high=tuning.send_buffer)
        # The socket, for raw writes while the transport has nothing buffered (never under
        # TLS, where the bytes on the socket are not the frames).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, tuning.socket_buffer)
        plain = sock is not None and transport.get_extra_info("sslcontext") is None
        self.fd: int = sock.fileno() if plain else -1
        self.sub = DEFAULT_SUBSCRIPTION
        # The tick this client last received (full or delta): what its next delta patches.
        self.base: TickVersion | None = None
        self.outbox = Outbox(self.sub.max_rate, tuning.send_buffer)
        self.ready = False  # the snapshot (or resume backlog) is sent: the sender may run
        self.sender: asyncio.Task[None] | None = None  # running while the outbox holds some
        self.nudge: asyncio.Future[None] | None = None  # the sender's wait on the rate limit
        self.close_reason = "closed"

    def greeted(self) -> None:
        """The greeting is sent: from now on messages may bypass the outbox, and what it
        queued meanwhile goes out."""
        self.ready = True
        self.outbox.live = True
        self.kick()

    def kick(self) -> None:
        """Something was queued (or the rate changed): start the sender if it is not
        running, or cut its wait on the rate limit short."""
        if self.sender is None:
            if self.ready and len(self.outbox):
                self.sender = asyncio.create_task(self.send_loop())
        elif self.nudge is not None and not self.nudge.done():
            self.nudge.set_result(None)

    async def stop_sending(self) -> None:
        """Cancel the sender, if it runs; one that failed is logged."""
        sender, self.ready = self.sender, False
        if sender is None:
            return
        sender.cancel()
        try:
            await sender
        except asyncio.CancelledError:
            pass
        except Exception:  # the sender handles a client that stops reading itself
            log.exception("a websocket client's sender failed")

    def subscribe(self, sub: feed.Subscription) -> None:
        self.sub = sub
        self.base = None  # after a subscription change, a full tick first
        self.outbox.pace.rate = sub.max_rate
        self.kick()

    def route(self, key: feed.PositionKey | None) -> Route:
        """Where a message at `key` (None: a replay message) goes now (see `Outbox.route`)."""
        t = self.transport
        closing = t.is_closing() or self.ws.closed
        return self.outbox.route(key, t.get_write_buffer_size(), closing, self.fd >= 0)

    def route_tick(self, key: feed.PositionKey, now: float) -> Route:
        t = self.transport
        closing = t.is_closing() or self.ws.closed
        return self.outbox.route_tick(key, now, t.get_write_buffer_size(), closing, self.fd >= 0)

    def offer_tick(self, key: feed.PositionKey, text: Payload) -> None:
        if self.outbox.offer_tick(key, text):
            self.metrics.ticks_coalesced += 1
        self.kick()

    def offer(self, key: feed.PositionKey | None, text: bytes) -> bool:
        """Queue a milestone (or with `key` None, a replay message); False if stuck."""
        if key is None:
            queued = self.outbox.offer_replay(text)
        else:
            queued = self.outbox.offer_urgent(key, text)
        self.kick()
        return queued

    def tick_text(self, version: TickVersion) -> bytes:
        """The text of a tick this client is sent now (a delta from what it last received,
        if it asked for deltas); from now on its base."""
        if self.sub.delta:
            text = version.text(self.base, self.sub.topics)[0]
        else:
            text = version.full_tick(self.sub.topics)[0]
        self.base = version
        return text

    def resolve(self, step: Payload) -> bytes:
        return self.tick_text(step) if isinstance(step, TickVersion) else step

    async def send(self, text: bytes) -> None:
        """Send one encoded JSON text frame (encoded once for every client that gets it),
        after the connection has taken what it had (its buffer at most `send_buffer`)."""
        self.outbox.sending = True
        try:
            async with asyncio.timeout(self.send_timeout):  # cheaper than wait_for
                await self.writer.drain()
                await self.ws.send_frame(text, WSMsgType.TEXT)
        finally:
            self.outbox.sending = False
        self.metrics.messages_sent += 1
        self.metrics.bytes_sent += len(text)

    async def send_ready(self) -> float | None:
        """Send what the outbox gives now, in its order, as the connection takes it; then
        None when it is empty, or the seconds until the client's own rate limit lets the tick
        it holds back go. The websocket's and the SSE senders' one send step."""
        while (step := self.outbox.next_message(time.monotonic())) is not None:
            if not isinstance(step, bytes | TickVersion):
                return step
            await self.send(self.resolve(step))
        return None

    async def send_loop(self) -> None:
        """Send what the outbox gives, in its order, as the connection takes it; return
        when it is empty (the next `kick` starts another)."""
        try:
            while not self.ws.closed:
                wait = await self.send_ready()
                if wait is None:
                    return
                # The client's own rate limit holds a tick back (newer ones replace it);
                # a milestone cuts the wait short.
                self.nudge = asyncio.get_running_loop().create_future()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # not wait_for: see close()
                        await self.nudge
                self.nudge = None
        except (TimeoutError, ConnectionResetError):
            log.warning("disconnecting a client that stopped reading")
            self.drop("slow")
        finally:
            self.sender = self.nudge = None

    async def goodbye(self, code: int, message: bytes) -> None:
        """Close the connection with `code` (shutdown, a feed reset); the client may resume."""
        await close(self.ws, code, message)

    def drop(self, reason: str) -> None:
        """Cut a client that stopped reading: a close handshake would wait on it too."""
        self.close_reason = reason
        self.metrics.updates_dropped += self.outbox.clear()
        self.transport.abort()


HEARTBEAT_ATTRIBUTES = tuple(
    name
    for name in ("_heartbeat_when", "_heartbeat_cb", "_pong_response_cb", "_ping_task")
    if hasattr(web.WebSocketResponse, name)
)


class CheckedWebSocket(web.WebSocketResponse):
    """A websocket that closes (1002) a connection whose client sends an unmasked frame
    (RFC 6455 section 5.1), which aiohttp's reader accepts: its frame parser is fronted by
    a `MaskCheck` from the first byte after the handshake, before any frame is parsed."""

    # aiohttp sets ~31 attributes on a websocket over its life, its heartbeat's last: past
    # the 30 keys CPython's instances of one class share (PEP 412), the first ping turned
    # each client's attributes into a dict of its own (~1.5 KB more an idle client,
    # measured with tracemalloc). The heartbeat's live in slots instead, from their
    # defaults on aiohttp's class (only the ones this aiohttp version has).
    __slots__ = (*HEARTBEAT_ATTRIBUTES, "unmasked")

    def __init__(self, **kwargs: Any) -> None:
        for name in HEARTBEAT_ATTRIBUTES:
            setattr(self, name, getattr(web.WebSocketResponse, name))
        self.unmasked = False  # the client sent an unmasked frame; the connection is closing
        super().__init__(**kwargs)

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        proto = request.protocol
        check = MaskCheck()
        early = bytes(getattr(proto, "_message_tail", b"") or b"")  # sent with the upgrade
        clean = check.feed(early)
        super()._post_start(request, protocol, writer)
        # aiohttp's queue of pipelined HTTP requests is empty from now on (frames go to
        # the frame parser): a list in its place, as an empty deque costs ~0.75 KB.
        if isinstance(getattr(proto, "_messages", None), deque) and not proto._messages:
            proto._messages = _Requests()
        inner: Any = getattr(proto, "_payload_parser", None)
        if inner is None:
            return
        proto._payload_parser = _Checked(check, inner, self, request)
        if not clean:
            self._refuse_unmasked(request)

    def _refuse_unmasked(self, request: Any) -> None:
        transport = request.transport
        if self.unmasked or transport is None or transport.is_closing():
            return
        self.unmasked = True
        reason = b"client frames must be masked"
        transport.write(feed.frame(0x8, struct.pack("!H", WSCloseCode.PROTOCOL_ERROR) + reason))
        transport.close()


class _Requests(list[Any]):
    """An empty deque's stand-in (`popleft` is all aiohttp uses of a deque beyond a list)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class _Checked:
    """aiohttp's frame parser behind a `MaskCheck` (one per connection: kept small)."""

    __slots__ = ("check", "inner", "request", "ws")

    def __init__(self, check: MaskCheck, inner: Any, ws: CheckedWebSocket, request: Any) -> None:
        self.check, self.inner, self.ws, self.request = check, inner, ws, request

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.check.feed(data):
            return self.inner.feed_data(data)  # type: ignore[no-any-return]
        self.ws._refuse_unmasked(self.request)
        return False, b""

    def feed_eof(self) -> None:
        self.inner.feed_eof()


async def close(ws: web.WebSocketResponse, code: int, message: bytes, timeout: float = 2) -> None:
    """Close a websocket with `code`, waiting at most `timeout` for the peer. A peer that
    is gone or does not answer is expected; anything else is logged."""
    try:
        # asyncio.timeout rather than wait_for, whose 3.11 version can swallow the task's
        # own cancellation when the close finishes at that moment: a server then never
        # finishes stopping.
        async with asyncio.timeout(timeout):
            await ws.close(code=code, message=message)
    except (TimeoutError, ConnectionError):
        pass
    except Exception:
        log.exception("could not close a websocket (code %d)", code)


async def serve(hub: Hub, c: Client, since: str | None, epoch: str | None) -> None:
    """Run one connected client until it goes: hello, the greeting, then its requests,
    while its sender sends what its outbox holds; count why it went.

    An idle client waits here, in `ws.receive()`: its requests are read in this
    coroutine, not in one of their own (nor `async for`, whose `__anext__` is one more),
    as every coroutine on an idle client's stack costs ~0.25 KB (~10,000 clients)."""
    if not await hub.wait_loaded():
        hub.metrics.disconnects["not_ready"] += 1
        await close(c.ws, WSCloseCode.TRY_AGAIN_LATER, NOT_READY)
        return
    hub.clients.add(c)
    bad = 0  # malformed requests answered so far
    try:
        await c.send(feed.hello(hub.epoch).encode())
        await greet(hub, c, since, epoch)
        c.greeted()
        while (msg := await c.ws.receive()).type not in CLOSED:
            if msg.type == WSMsgType.TEXT:
                try:
                    c.subscribe(feed.parse_request(msg.data))
                except feed.BadRequest as exc:
                    bad += 1
                    await c.send(feed.error("bad_request", str(exc)).encode())
                    if bad >= MAX_BAD_MESSAGES:
                        c.close_reason = "bad_requests"
                        await c.ws.close(
                            code=WSCloseCode.POLICY_VIOLATION,
                            message=b"too many malformed messages",
                        )
            elif msg.type == WSMsgType.BINARY:
                c.close_reason = "binary"
                await c.ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
            elif msg.type == WSMsgType.ERROR:
                # aiohttp's heartbeat: no pong in time (it has closed the transport, code
                # 1006); or a message too big, which aiohttp closed with 1009 (the close
                # code it keeps afterwards may be the peer's, or 1006).
                if isinstance(msg.data, TimeoutError):
                    c.close_reason = "heartbeat"
                elif getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    c.close_reason = "too_big"
                else:
                    c.close_reason = "error"
                break
    except (TimeoutError, ConnectionResetError):
        c.close_reason = "slow"
    except Exception:  # the socket is upgraded: no HTTP 500 here, a close 1011
        log.exception("error on a websocket connection")
        c.close_reason = "error"
        await close(c.ws, WSCloseCode.INTERNAL_ERROR, b"internal error")
    finally:
        c.outbox.live = False
        hub.clients.discard(c)
        await c.stop_sending()
        if c.ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            c.close_reason = "too_big"
        if isinstance(c.ws, CheckedWebSocket) and c.ws.unmasked:
            c.close_reason = "unmasked"
        if c.close_reason == "too_big":
            hub.metrics.connections_refused["too_big"] += 1
        if c.close_reason in ("heartbeat", "slow"):
            # No close handshake with a peer that does not answer; and a plain close
            # would keep the socket until its unsent bytes drain, which may be never.
            c.transport.abort()
        hub.metrics.disconnects[c.close_reason] += 1


async def greet(hub: Hub, c: Client, since: str | None, epoch: str | None) -> None:
    """Send the snapshot, or on resume the milestones missed and then the snapshot.

    The state and position are taken before anything is awaited: entries the hub takes
    meanwhile reach this client through its sender, after the snapshot."""
    state, position = hub.state, hub.position
    recovered: bool | None = None
    missed: list[bytes] = []
    if since is not None:
        recovered = False
        if epoch in (None, hub.epoch):
            found = await hub.missed_milestones(since, position)
            if found is not None:
                recovered, missed = True, found
                if feed.position_key(since) > feed.position_key(position):
                    position = since  # ahead of this server: nothing older is sent
    for text in missed:
        await c.send(text)
    c.outbox.floor = feed.position_key(position)
    await c.send(feed.snapshot(state, position, hub.epoch, recovered).encode())
