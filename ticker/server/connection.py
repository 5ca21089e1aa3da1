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

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from ticker import feed
from ticker.core.pace import Pace
from ticker.guard import MaskCheck
from ticker.metrics import ServerMetrics
from ticker.server.tuning import Tuning

if TYPE_CHECKING:
    from ticker.server.hub import Hub

log = logging.getLogger("ticker.serve")

MAX_URGENT = 1_000  # milestones queued for one client before it is deemed stuck
MAX_CLIENT_MESSAGE = 4_096  # bytes; larger client messages close the connection with 1009
MAX_BAD_MESSAGES = 5  # malformed client messages answered with errors before close 1008

# A message queued for one client: its position (None: a replay message, which has none),
# its JSON text, and whether it is a tick (sending it raises the client's floor).
Queued = tuple[feed.PositionKey | None, bytes, bool]


class Client:
    """One websocket connection, its subscription and what is waiting to be sent to it."""

    __slots__ = (
        "close_reason",
        "fd",
        "floor",
        "latest_tick",
        "live",
        "metrics",
        "pace",
        "ready",
        "send_buffer",
        "send_timeout",
        "sending",
        "sub",
        "transport",
        "urgent",
        "wake",
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
        self.ws, self.writer, self.transport, self.metrics = ws, writer, transport, metrics
        self.send_timeout, self.send_buffer = tuning.send_timeout, tuning.send_buffer
        # Above send_buffer the transport pauses its protocol, so `writer.drain()` (the
        # sender's wait) and the direct path's check agree on what "full" means.
        transport.set_write_buffer_limits(high=tuning.send_buffer)
        # The socket, for raw writes while the transport has nothing buffered (never under
        # TLS, where the bytes on the socket are not the frames).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, tuning.socket_buffer)
        plain = sock is not None and transport.get_extra_info("sslcontext") is None
        self.fd: int = sock.fileno() if plain else -1
        self.sub = feed.Subscription()
        self.floor: feed.PositionKey = (0, 0, 0)  # positions at or below this were sent
        self.latest_tick: tuple[feed.PositionKey, bytes] | None = None
        # In order: milestones (at their position), replay messages (no position: never
        # below the floor) and a tick that a replay message had to follow (see offer_replay).
        self.urgent: deque[Queued] = deque()
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once the snapshot (or resume backlog) is sent
        self.live = False  # ready, as a plain attribute for the broadcast loop
        self.sending = False  # the sender is inside a send (possibly waiting for the socket)
        self.pace = Pace(self.sub.max_rate)  # the client's max_rate, as a token bucket
        self.close_reason = "closed"

    def direct(self, key: feed.PositionKey | None) -> int:
        """May the message at `key` be written now, bypassing the sender? 0: no; 1: yes, to
        the transport (behind the bytes it holds); 2: yes, raw to the socket (it holds none).

        Only when the sender holds and sends nothing (so nothing older is still to come),
        the message is new to this client (a `key` of None, a replay message, always is),
        and the connection keeps up.
        """
        if (
            not self.live
            or self.sending
            or self.latest_tick is not None
            or self.urgent
            or (key is not None and key <= self.floor)
            or self.transport.is_closing()
            or self.ws.closed
        ):
            return 0
        held = self.transport.get_write_buffer_size()
        if held > self.send_buffer:
            return 0
        return 1 if held or self.fd < 0 else 2

    def offer_tick(self, key: feed.PositionKey, text: bytes) -> None:
        if self.latest_tick is not None:
            self.metrics.ticks_coalesced += 1
        self.latest_tick = (key, text)  # coalesce: only the newest tick is kept
        self.wake.set()

    def offer_urgent(self, key: feed.PositionKey | None, text: bytes) -> bool:
        """Queue a milestone (or with `key` None, a replay message); False if stuck."""
        if len(self.urgent) >= MAX_URGENT:
            return False
        self.urgent.append((key, text, False))
        self.wake.set()
        return True

    def offer_replay(self, text: bytes) -> bool:
        """Queue a replay message behind the tick waiting for this client, if any: that
        tick carries the replay's older state, and must not arrive after the news."""
        if self.latest_tick is not None:
            if len(self.urgent) >= MAX_URGENT:
                return False
            key, tick_text = self.latest_tick
            self.latest_tick = None
            self.urgent.append((key, tick_text, True))
        return self.offer_urgent(None, text)

    async def send(self, text: bytes) -> None:
        """Send one encoded JSON text frame (encoded once for every client that gets it),
        after the connection has taken what it had (its buffer at most `send_buffer`)."""
        self.sending = True
        try:
            async with asyncio.timeout(self.send_timeout):  # cheaper than wait_for
                await self.writer.drain()
                await self.ws.send_frame(text, WSMsgType.TEXT)
        finally:
            self.sending = False
        self.metrics.messages_sent += 1
        self.metrics.bytes_sent += len(text)

    async def send_loop(self) -> None:
        await self.ready.wait()
        try:
            while not self.ws.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.urgent:
                    key, text, is_tick = self.urgent.popleft()
                    if key is None or key > self.floor:
                        if is_tick:
                            assert key is not None
                            self.floor = key
                            self.pace.take(time.monotonic())
                        await self.send(text)
                if self.latest_tick is None:
                    continue
                wait = self.pace.wait(time.monotonic())
                if wait > 0:  # the client's own rate limit; newer ticks replace this one
                    with contextlib.suppress(TimeoutError):  # a milestone cuts the wait short
                        await asyncio.wait_for(self.wake.wait(), wait)
                    self.wake.set()
                    continue
                (key, text), self.latest_tick = self.latest_tick, None
                if key > self.floor:
                    self.floor = key
                    self.pace.take(time.monotonic())
                    await self.send(text)
        except (TimeoutError, ConnectionResetError):
            log.warning("disconnecting a client that stopped reading")
            self.drop("slow")

    def drop(self, reason: str) -> None:
        """Cut a client that stopped reading: a close handshake would wait on it too."""
        self.close_reason = reason
        self.metrics.updates_dropped += len(self.urgent) + (self.latest_tick is not None)
        self.urgent.clear()
        self.transport.abort()


class CheckedWebSocket(web.WebSocketResponse):
    """A websocket that closes (1002) a connection whose client sends an unmasked frame
    (RFC 6455 section 5.1), which aiohttp's reader accepts: its frame parser is fronted by
    a `MaskCheck` from the first byte after the handshake, before any frame is parsed."""

    unmasked = False  # the client sent an unmasked frame; the connection is closing

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        proto = request.protocol
        check = MaskCheck()
        early = bytes(getattr(proto, "_message_tail", b"") or b"")  # sent with the upgrade
        clean = check.feed(early)
        super()._post_start(request, protocol, writer)
        inner: Any = getattr(proto, "_payload_parser", None)
        if inner is None:
            return
        ws = self

        class Checked:
            def feed_data(self, data: bytes) -> tuple[bool, bytes]:
                if check.feed(data):
                    return inner.feed_data(data)  # type: ignore[no-any-return]
                ws._refuse_unmasked(request)
                return False, b""

            def feed_eof(self) -> None:
                inner.feed_eof()

        proto._payload_parser = Checked()
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
    c.floor = feed.position_key(position)
    await c.send(orjson.dumps(feed.snapshot(state, position, hub.epoch, recovered)))


async def read_requests(c: Client) -> None:
    bad = 0
    async for msg in c.ws:
        if msg.type == WSMsgType.TEXT:
            try:
                c.sub = feed.parse_request(msg.data)
                c.pace.rate = c.sub.max_rate
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
            # aiohttp's heartbeat: no pong in time (it has closed the transport, code 1006);
            # or a message too big, which aiohttp closed with 1009 (the close code it keeps
            # afterwards may be the peer's, or 1006).
            if isinstance(msg.data, TimeoutError):
                c.close_reason = "heartbeat"
            elif getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                c.close_reason = "too_big"
            else:
                c.close_reason = "error"
            break
