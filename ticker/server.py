"""The websocket server's I/O shell (aiohttp).

One task tails the feed stream (XREAD BLOCK) and keeps the latest state; another hands a
tick to every client at most `tick_hz` times a second on average (`Pace`); milestones go
out at once. Each
message is encoded once per subscription kind, and framed once as websocket bytes.

Fan-out has two paths. The fast one: a client that is ready, has nothing queued, is due a
tick under its own rate and whose connection has taken what it was given (its transport's
write buffer is at most `Tuning.send_buffer` bytes) gets the pre-built frame written straight
to its transport by the broadcast loop: no task wake-up, no per-client encoding. Every other
client (slow, not yet greeted, rate-limited) goes through its own sender task, which holds only
the newest tick plus the milestones not yet sent: a slow client gets the newest state when it
catches up, never delays anyone else, and is dropped if it stays stuck. A client never gets a
direct write while its sender holds or is sending anything, so each client's order is kept;
aiohttp writes every uncompressed frame whole and synchronously (compression is off), so
direct writes never split one of its frames (pings, pongs, close).
"""

import array
import asyncio
import contextlib
import gc
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from ticker import feed
from ticker.core import timeline
from ticker.core.control import CONTROL_MAXLEN, parse_command, refusal, replay_status
from ticker.core.pace import Pace
from ticker.guard import (
    MaskCheck,
    Policy,
    RateLimiter,
    RedactTokens,
    bearer,
    own_origins,
    token_matches,
)
from ticker.keys import GROUP, Keys
from ticker.metrics import ServerMetrics
from ticker.redis_io import TRANSIENT, client

write_all: "Callable[[array.array[int], bytes], list[tuple[int, int]]] | None"
try:
    from ticker._fanout import write_all
except ImportError:  # built without a C compiler: the broadcasts write from Python
    write_all = None

log = logging.getLogger("ticker.serve")

# The page lives at the top of the repo (web/); TICKER_WEB_DIR points elsewhere when the
# package is installed away from its source, as in docker-compose.yml.
WEB_DIR = Path(os.environ.get("TICKER_WEB_DIR") or Path(__file__).resolve().parent.parent / "web")
MAX_URGENT = 1_000  # milestones queued for one client before it is deemed stuck
MAX_CLIENT_MESSAGE = 4_096  # bytes; larger client messages close the connection with 1009
MAX_BAD_MESSAGES = 5  # malformed client messages answered with errors before close 1008
REPLAY_POLL_S = 0.25  # how often the replay's state is read (screens learn within 1 s)
READER_STALE_S = 5.0  # the feed reader heard from Redis this recently, or /healthz is 503
RESUME_PAGE = 64  # feed entries read per XRANGE while a resume looks for missed milestones
RESUME_MAX_ENTRIES = 2_000  # a resume further behind gets a fresh snapshot instead
RESUME_READERS = 4  # resumes reading the feed at once, per server


@dataclass(frozen=True)
class Tuning:
    """Per-connection timings and bounds; docs/protocol.md states the defaults.

    `ticker serve` takes them from the environment (`from_env`): TICKER_HEARTBEAT,
    TICKER_SEND_TIMEOUT (seconds), TICKER_SEND_BUFFER and TICKER_SOCKET_BUFFER (bytes),
    TICKER_SEND_THREADS and
    TICKER_NATIVE_WRITES (0: write broadcasts from Python even where the C module is
    built). The tests shrink them to see a dead connection closed, or a stuck one dropped,
    in a second or two.
    """

    heartbeat: float = 10.0  # ping after this long without a word; no pong in half -> dropped
    send_timeout: float = 10.0  # a send blocked this long means the client stopped reading
    send_buffer: int = 64 * 1024  # bytes queued in a client's transport: no direct writes above
    # The kernel's send buffer per client socket (SO_SNDBUF; Linux doubles it): bounded, so
    # a client that stops reading is noticed (and dropped after send_timeout) while it
    # holds ~2x this, not the megabytes the kernel's autotuning would give it.
    socket_buffer: int = 64 * 1024
    send_threads: int = 2  # threads writing a broadcast's frames (the kernel's work in parallel)
    native_writes: bool = True  # with ticker._fanout where it is built

    def __post_init__(self) -> None:
        if not (
            self.heartbeat > 0
            and self.send_timeout > 0
            and self.send_buffer > 0
            and self.socket_buffer > 0
        ):
            raise ValueError(f"heartbeat, send timeout and send buffer must be above 0: {self}")
        if not 1 <= self.send_threads <= 64:
            raise ValueError(f"send threads must be 1 to 64: {self}")

    @classmethod
    def from_env(cls) -> "Tuning":
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None

        d = cls()
        return cls(
            heartbeat=number("TICKER_HEARTBEAT", d.heartbeat),
            send_timeout=number("TICKER_SEND_TIMEOUT", d.send_timeout),
            send_buffer=int(number("TICKER_SEND_BUFFER", d.send_buffer)),
            socket_buffer=int(number("TICKER_SOCKET_BUFFER", d.socket_buffer)),
            send_threads=int(number("TICKER_SEND_THREADS", d.send_threads)),
            native_writes=bool(number("TICKER_NATIVE_WRITES", d.native_writes)),
        )


# The cyclic GC: a full collection walks every tracked object, ~1.5M at 10,000 clients, and
# stopped the server for 50-380 ms (measured) although it found nothing. So survivors are
# frozen each second (automatic collections then scan only young objects), and a full
# collection runs rarely: dead clients' cycles wait for it (~20 KB each).
GC_FREEZE_EVERY = 1.0  # seconds
GC_FULL_EVERY = 600.0  # seconds between full collections...
GC_FULL_AFTER = 2_000  # ...or sooner, after this many disconnects

PARALLEL_FROM = 256  # a broadcast to fewer clients is written by the event loop's thread alone
CHUNK = 512  # clients per share of a broadcast handed to a writer thread (~4 ms of sends)
# The writer threads need the GIL for a moment between shares, while the event loop's
# thread holds it choosing clients; a waiting thread gets it after this long at most
# (Python's default is 5 ms). `ticker serve` sets it: 10,000-client broadcasts took 69 ms
# instead of 78-88 (measured with CHUNK 512).
GIL_SWITCH_INTERVAL = 0.001

# A share of a broadcast: the frame and the clients whose sockets take it raw.
Share = tuple[bytes, list["Client"]]
# A message queued for one client: its position (None: a replay message, which has none),
# its JSON text, and whether it is a tick (sending it raises the client's floor).
Queued = tuple[feed.PositionKey | None, bytes, bool]


class Fanout:
    """Writes frames to many sockets, the kernel's work spread over `threads` threads.

    A TCP send over loopback costs ~7-10 us of kernel time, most of a broadcast's cost. The
    broadcast hands its shares to the writer threads as it builds them, so they write while
    it is still choosing the clients (~2 us each, in Python); then the event loop's thread
    writes shares too, until all are written. The loop runs nothing else meanwhile, so no
    other write can reach these sockets in between. Only sockets whose transport buffer is
    empty are written raw; what the kernel does not take goes to the transport afterwards.

    A share is written by `ticker._fanout.write_all` (C, the whole loop without the GIL)
    when it is built, else by `os.write` in Python, which takes the GIL back after every
    send: the threads then queue for it, and a broadcast takes ~25% longer (measured).
    """

    def __init__(self, threads: int, native: bool = True) -> None:
        self.write_all = write_all if native else None
        self.shares: queue.SimpleQueue[Share | None] = queue.SimpleQueue()
        self.written: queue.SimpleQueue[list[tuple[Client, bytes]]] = queue.SimpleQueue()
        self.writers = [
            threading.Thread(target=self._writer, name=f"fanout-{k}", daemon=True)
            for k in range(threads - 1)
        ]
        for t in self.writers:
            t.start()

    def _write(self, frame: bytes, clients: list["Client"]) -> list[tuple["Client", bytes]]:
        """Write `frame` raw to each client's socket; the parts the kernel did not take.

        A socket that fails (reset, closed) is skipped: its transport learns it from its
        own reads."""
        if self.write_all is not None:
            fds = array.array("i", [c.fd for c in clients])
            return [(clients[i], frame[n:]) for i, n in self.write_all(fds, frame) if n >= 0]
        short: list[tuple[Client, bytes]] = []
        size = len(frame)
        for c in clients:
            try:
                n = os.write(c.fd, frame)
            except BlockingIOError:
                n = 0
            except OSError:
                continue
            if n < size:
                short.append((c, frame[n:]))
        return short

    def _writer(self) -> None:
        while (share := self.shares.get()) is not None:
            short: list[tuple[Client, bytes]] = []
            try:
                short = self._write(*share)
            finally:  # always answer: the broadcast waits for every share
                self.written.put(short)

    def send(self, shares: Iterable[Share], parallel: bool = True) -> None:
        """Write every share; return once all are written.

        `shares` may be a generator: each share goes to the writer threads as soon as it is
        made. Without writers, or with `parallel` false, this thread writes them all.
        """
        if not (self.writers and parallel):
            for frame, clients in shares:
                self._finish(self._write(frame, clients))
            return
        handed = 0
        try:
            for share in shares:
                self.shares.put(share)
                handed += 1
        finally:  # even if making the shares failed: no writer may outlive this call
            while handed:  # help with what the writers have not taken, then wait for them
                try:
                    taken = self.shares.get_nowait()
                except queue.Empty:
                    self._finish(self.written.get())
                else:
                    assert taken is not None  # only close() hands out None
                    self._finish(self._write(*taken))
                handed -= 1

    @staticmethod
    def _finish(short: list[tuple["Client", bytes]]) -> None:
        for c, rest in short:
            c.transport.write(rest)

    def write(self, frame: bytes, clients: list["Client"]) -> None:
        """Write one frame to these clients' sockets."""
        shares = [(frame, clients[k : k + CHUNK]) for k in range(0, len(clients), CHUNK)]
        self.send(shares, parallel=len(clients) >= PARALLEL_FROM)

    def close(self) -> None:
        for _ in self.writers:
            self.shares.put(None)


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


class Hub:
    """The latest state from the feed, the replay's state, and the connected clients."""

    def __init__(
        self, redis_url: str, keys: Keys, tick_hz: float = 10.0, tuning: Tuning | None = None
    ) -> None:
        self.keys, self.tick_interval = keys, 1.0 / tick_hz
        self.tuning = tuning or Tuning()
        self.fanout = Fanout(self.tuning.send_threads, self.tuning.native_writes)
        self.redis = client(redis_url)
        # The state at `position` with the day's full curve (snapshots, /api/state), and the
        # same with only the feed entry's tail of it (ticks).
        self.state: dict[str, Any] = {**feed.EMPTY_STATE, "replay": None}
        self.tick_state: dict[str, Any] = dict(self.state)
        self.curve: list[timeline.Point] = []
        self.position = "0-0"
        self.epoch = ""
        self.replay_raw: Any = None  # the replay hash's state as last read
        self.replay: dict[str, Any] | None = None  # replay_status(replay_raw, now)
        self.clients: set[Client] = set()
        self.metrics = ServerMetrics()
        self.dirty = asyncio.Event()  # the state changed since the last tick went out
        self.broadcast_key: feed.PositionKey = (0, 0, 0)  # the newest position broadcast
        self.redis_ok = False
        self.read_at = -READER_STALE_S  # time.monotonic() of the feed reader's last reply
        self.reader: asyncio.Task[None] | None = None  # the task running `tail`
        self.tasks: list[asyncio.Task[Any]] = []  # all background tasks, the reader too
        self.resumes = asyncio.Semaphore(RESUME_READERS)
        self.resume_readers = 0  # resumes reading the feed now
        self.closing: set[asyncio.Task[Any]] = set()  # close handshakes under way

    def set_state(self, state: dict[str, Any], position: str, curve: list[timeline.Point]) -> None:
        self.curve, self.position = curve, position
        self.tick_state = {**state, "replay": self.replay}
        self.state = {**self.tick_state, "curve": curve}

    async def load(self) -> None:
        """Start from the newest feed entry and the full curve, read in one transaction
        (the keys share a hash tag), so the curve is the one of that entry."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.epoch)
            pipe.get(self.keys.curve)
            pipe.xrevrange(self.keys.feed, count=1)
            epoch, curve, last = await pipe.execute()
        self.epoch = epoch.decode() if epoch else ""
        state, position = {**feed.EMPTY_STATE}, "0-0"
        if last:
            entry_id, fields = last[0]
            position = entry_id.decode()
            try:
                state, _ = feed.parse_entry(fields)
            except feed.BadFeedEntry as exc:
                self.skip_entry(position, str(exc))
        tail = state.get("curve") or []
        from_ms = int(state.get("from_ms") or 0)
        full, _ = timeline.merge_tail(feed.decode_curve(curve), tail, from_ms)
        self.set_state(state, position, full)
        self.dirty.set()

    def healthy(self) -> str | None:
        """None while the feed is followed; else what is wrong, in words."""
        if self.reader is None or self.reader.done():
            return "the feed reader is not running"
        if any(t.done() for t in self.tasks):
            return "a background task of the server has stopped"
        if not self.redis_ok:
            return "Redis is unavailable"
        if time.monotonic() - self.read_at > READER_STALE_S:
            return "the feed reader has had no answer from Redis lately"
        return None

    async def tail(self) -> None:
        """Follow the feed stream forever. Through a Redis outage it resumes from the
        position reached (so no milestone is skipped); a bad entry is skipped and logged;
        a feed that was lost (a new epoch) is loaded afresh and the clients resync; any
        other failure is logged and the reader starts again."""
        delay, loaded = 0.1, False
        while True:
            try:
                if loaded:
                    await self.reconnect()
                else:
                    await self.load()
                    loaded = True
                self.redis_ok, self.read_at, delay = True, time.monotonic(), 0.1
                while True:
                    reply = await self.redis.xread(
                        {self.keys.feed: self.position}, block=1000, count=500
                    )
                    self.read_at = time.monotonic()
                    for entry_id, fields in reply[0][1] if reply else []:
                        await self.on_entry(entry_id.decode(), fields)
                    await self.check_epoch()
            except TRANSIENT as exc:
                self.redis_ok = False
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
            except Exception:
                self.redis_ok = False
                log.exception("the feed reader failed; restarting it in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def reconnect(self) -> None:
        """Back after an outage: go on from the position reached if the feed still holds
        what follows it; else (trimmed meanwhile) take the newest entry and announce the
        milestones its state lists that ours did not; a new epoch resyncs everyone."""
        if await self.check_epoch():
            return
        first = await self.redis.xrange(self.keys.feed, "-", "+", count=1)
        if not first or self.position == "0-0":
            return
        if feed.position_key(first[0][0].decode()) <= feed.position_key(self.position):
            return
        before = {m.get("id") for m in self.state.get("milestones") or []}
        log.warning("feed entries after %s were trimmed during the outage", self.position)
        await self.load()
        missed = [m for m in self.state.get("milestones") or [] if m.get("id") not in before]
        self.announce(self.position, missed)

    async def check_epoch(self) -> bool:
        """Notice a new epoch (Redis lost the feed): load afresh and tell clients to
        reconnect (1012), so they resume into a fresh snapshot. True if it changed."""
        raw = await self.redis.get(self.keys.epoch)
        epoch = raw.decode() if raw else ""
        if epoch == self.epoch:
            return False
        if not self.epoch:  # the first commit of a new feed
            self.epoch = epoch
            return False
        log.warning("the feed's epoch changed (%s -> %s): reloading", self.epoch, epoch or "none")
        await self.load()
        for c in list(self.clients):
            c.close_reason = "resync"
            task = asyncio.create_task(
                c.ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"the feed was reset")
            )
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)
        return True

    def skip_entry(self, position: str, reason: str) -> None:
        self.metrics.feed_bad_entries += 1
        log.warning("skipped feed entry %s: %s", position, reason)

    async def follow_replay(self) -> None:
        """Poll the replay's state (a small hash) a few times a second; its status turns
        "stopped" when its heartbeat ends, with or without a write."""
        while True:
            await asyncio.sleep(REPLAY_POLL_S)
            try:
                self.replay_raw = feed.decode_replay(
                    await self.redis.hget(self.keys.replay, "state")
                )
            except TRANSIENT:
                pass  # judged on the last state read, so a heartbeat unseen goes stale
            except Exception:  # e.g. the key is not a hash: say so, and keep polling
                log.exception("could not read the replay's state")
                self.replay_raw = None
            try:
                self.update_replay(replay_status(self.replay_raw, int(time.time() * 1000)))
            except Exception:
                log.exception("could not follow the replay's state %r", self.replay_raw)

    def update_replay(self, status: dict[str, Any] | None) -> None:
        """Keep `status` in the state; push a `replay` message when it is news."""
        news = feed.replay_news(status) != feed.replay_news(self.replay)
        self.replay = self.state["replay"] = self.tick_state["replay"] = status
        if news:
            self.broadcast_urgent(None, orjson.dumps(feed.replay(status)), topic="replay")

    async def on_entry(self, position: str, fields: dict[bytes, bytes]) -> None:
        """Take one feed entry: the new state, its curve folded in, its milestones sent."""
        try:
            state, fired = feed.parse_entry(fields)
            curve = await self.fold_curve(state)
        except TRANSIENT:
            raise
        except feed.BadFeedEntry as exc:
            self.skip_entry(position, str(exc))
            self.position = position
            return
        except Exception as exc:  # never stop the feed on one entry
            log.exception("skipped feed entry %s", position)
            self.skip_entry(position, repr(exc))
            self.position = position
            return
        self.set_state(state, position, curve)
        self.dirty.set()
        self.announce(position, fired)

    def announce(self, position: str, fired: list[dict[str, Any]]) -> None:
        for f, at in zip(fired, feed.milestone_positions(position, len(fired)), strict=True):
            self.broadcast_urgent(feed.position_key(at), orjson.dumps(feed.milestone(f, at)))

    async def fold_curve(self, state: dict[str, Any]) -> list[timeline.Point]:
        """The full curve with this entry's tail folded in; read again from Redis when
        the tail does not join (or a new run began)."""
        tail = state.get("curve") or []
        from_ms = int(state.get("from_ms") or 0)
        if state.get("run") == self.state.get("run"):
            curve, joined = timeline.merge_tail(self.curve, tail, from_ms)
            if joined:
                return curve
        full = feed.decode_curve(await self.redis.get(self.keys.curve))
        curve, _ = timeline.merge_tail(full, tail, from_ms)
        return curve

    def broadcast_urgent(
        self, key: feed.PositionKey | None, text: bytes, topic: str | None = None
    ) -> None:
        """Send a milestone (or with `key` None, a replay message to the clients of
        `topic`) to every client now: straight to the socket when it keeps up."""
        frame = feed.text_frame(text)
        raw: list[Client] = []
        for c in list(self.clients):
            if topic is not None and topic not in c.sub.topics:
                continue
            how = c.direct(key)
            if how == 2:
                raw.append(c)
            elif how == 1:
                c.transport.write(frame)
                self.count_direct(1, len(text))
            elif not (c.offer_urgent(key, text) if key is not None else c.offer_replay(text)):
                self.clients.discard(c)
                c.drop("stuck")
        self.fanout.write(frame, raw)
        self.count_direct(len(raw), len(text))

    def count_direct(self, messages: int, payload: int) -> None:
        self.metrics.messages_sent += messages
        self.metrics.messages_direct += messages
        self.metrics.bytes_sent += messages * payload

    async def ticker(self) -> None:
        """Send a tick as soon as the state changes, but at most `tick_hz` times a second
        on average (see `Pace`: a feed at that very rate is never held back)."""
        pace = Pace(1.0 / self.tick_interval)
        while True:
            await self.dirty.wait()
            while (wait := pace.wait(time.monotonic())) > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            pace.take(now)
            self.dirty.clear()
            started = time.perf_counter()
            try:
                self.broadcast_tick(now)
            except Exception:  # one failed broadcast must not end the ticks
                log.exception("a tick broadcast failed")
            self.metrics.broadcasts += 1
            self.metrics.broadcast_seconds_sum += time.perf_counter() - started

    def broadcast_tick(self, now: float) -> None:
        """Hand the newest state to every client: straight to the socket when it keeps up
        and is due a tick, else to its sender (which coalesces and keeps the client's rate).
        """
        key = feed.position_key(self.position)
        if key > self.broadcast_key:  # a new feed entry (not only a new replay state)
            self.broadcast_key = key
            self.metrics.tick_delay_seconds_sum += max(0.0, time.time() - key[0] / 1000)
            self.metrics.tick_delays += 1
        self.fanout.send(self._tick_shares(key, now), len(self.clients) >= PARALLEL_FROM)

    def _tick_shares(self, key: feed.PositionKey, now: float) -> Iterator[Share]:
        """Choose each client's path for this tick; yield the raw writes, a share at a time.

        Runs inside `Fanout.send`, with the event loop held: the clients cannot change."""
        # Once per subscription kind: the JSON text and its frame; the clients to write raw.
        encoded: dict[frozenset[str], tuple[bytes, bytes]] = {}
        raw: dict[frozenset[str], list[Client]] = {}
        for c in self.clients:
            sub = c.sub
            enc = encoded.get(sub.topics)
            if enc is None:
                text = orjson.dumps(
                    feed.tick(feed.only(self.tick_state, sub.topics), self.position)
                )
                enc = encoded[sub.topics] = (text, feed.text_frame(text))
                raw[sub.topics] = []
            how = 0 if c.pace.wait(now) else c.direct(key)
            if how:
                c.floor = key
                c.pace.take(now)
            if how == 2:
                share = raw[sub.topics]
                share.append(c)
                if len(share) == CHUNK:
                    raw[sub.topics] = []
                    self.count_direct(CHUNK, len(enc[0]))
                    yield enc[1], share
            elif how == 1:
                c.transport.write(enc[1])
                self.count_direct(1, len(enc[0]))
            else:
                c.offer_tick(key, enc[0])
        for topics, share in raw.items():
            if share:
                self.count_direct(len(share), len(encoded[topics][0]))
                yield encoded[topics][1], share

    async def collect_garbage(self) -> None:
        """Keep the cyclic GC's full passes out of the broadcasts (see GC_FREEZE_EVERY)."""
        last_full, gone_at_full = time.monotonic(), 0
        try:
            while True:
                await asyncio.sleep(GC_FREEZE_EVERY)
                gone = sum(self.metrics.disconnects.values())
                if (
                    time.monotonic() - last_full >= GC_FULL_EVERY
                    or gone - gone_at_full >= GC_FULL_AFTER
                ):
                    started = time.perf_counter()
                    gc.unfreeze()
                    gc.collect()
                    last_full, gone_at_full = time.monotonic(), gone
                    self.metrics.gc_full_seconds_sum += time.perf_counter() - started
                    self.metrics.gc_full += 1
                gc.freeze()
        finally:
            gc.unfreeze()

    async def missed_milestones(self, since: str, upto: str) -> list[bytes] | None:
        """The milestone messages after position `since` up to the entry `upto`, for a
        resume; None when some of those entries are gone, or there are over
        RESUME_MAX_ENTRIES of them (the client then gets a fresh snapshot instead).

        Work for strangers is bounded: the feed is read RESUME_PAGE entries at a time, by
        at most RESUME_READERS resumes at once, and only the messages are kept."""
        seen = feed.position_key(since)
        entry, _, part = since.partition(".")
        out: list[bytes] = []
        async with self.resumes:
            self.resume_readers += 1
            self.metrics.resume_readers_peak = max(
                self.metrics.resume_readers_peak, self.resume_readers
            )
            try:
                if not await self.redis.xrange(self.keys.feed, entry, entry):
                    return None
                if upto == "0-0" or seen >= feed.position_key(upto):
                    return out
                start, read = entry if part else f"({entry}", 0
                while read < RESUME_MAX_ENTRIES:
                    page = await self.redis.xrange(self.keys.feed, start, upto, count=RESUME_PAGE)
                    read += len(page)
                    self.metrics.resume_entries_read += len(page)
                    for entry_id, fields in page:
                        position = entry_id.decode()
                        try:
                            _, fired = feed.parse_entry(fields)
                        except feed.BadFeedEntry:
                            continue
                        at = feed.milestone_positions(position, len(fired))
                        for f, pos in zip(fired, at, strict=True):
                            if feed.position_key(pos) > seen:
                                out.append(orjson.dumps(feed.milestone(f, pos)))
                    if len(page) < RESUME_PAGE:
                        return out
                    start = f"({page[-1][0].decode()}"
                return None
            finally:
                self.resume_readers -= 1


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


def _address(request: web.Request) -> str:
    return request.app[POLICY].client_address(
        request.remote, request.headers.get("X-Forwarded-For")
    )


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


async def websocket(request: web.Request) -> web.StreamResponse:
    hub, policy = request.app[HUB], request.app[POLICY]
    origin = request.headers.get("Origin")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    own = own_origins(request.scheme, sockname, request.host)
    if not policy.origin_allowed(origin, own):
        return _refuse(hub, "origin", 403, f"origin {origin} is not allowed")
    if not _feed_token_ok(request):
        return _refuse(hub, "token", 401, "this feed needs ?token=… or a Bearer token")
    since, epoch = request.query.get("since"), request.query.get("epoch")
    try:
        if since is not None:
            feed.position_key(since)
        if epoch is not None and len(epoch) > feed.MAX_EPOCH:
            raise feed.BadRequest(f"epoch is at most {feed.MAX_EPOCH} characters")
    except feed.BadRequest as exc:
        return _refuse(hub, "bad_request", 400, str(exc))
    if len(hub.clients) >= policy.max_clients:
        return _refuse(hub, "full", 503, "the server is at its connection limit; retry later")
    if not request.app[LIMITER].allow(_address(request)):
        return _refuse(hub, "rate", 429, "too many new connections from this address")
    # No permessage-deflate: a compressor per connection costs ~125 KB of memory and
    # doubles the CPU per message (measured: the README's Measured table); clients wanting
    # fewer bytes subscribe to `totals` only.
    # Compression must stay off: the broadcast writes pre-built uncompressed frames.
    ws = CheckedWebSocket(
        heartbeat=hub.tuning.heartbeat, max_msg_size=MAX_CLIENT_MESSAGE, compress=False
    )
    writer = await ws.prepare(request)
    transport = request.transport
    if transport is None:  # gone already
        return ws
    c = Client(ws, writer, transport, hub.metrics, hub.tuning)
    hub.clients.add(c)
    sender = asyncio.create_task(c.send_loop())
    try:
        await c.send(orjson.dumps(feed.hello(hub.epoch)))
        await _greet(hub, c, since, epoch)
        c.ready.set()
        c.live = True
        await _read_requests(c)
    except (TimeoutError, ConnectionResetError):
        c.close_reason = "slow"
    except Exception:  # the socket is upgraded: no HTTP 500 here, a close 1011
        log.exception("error on a websocket connection")
        c.close_reason = "error"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error"), 2
            )
    finally:
        c.live = False
        hub.clients.discard(c)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            c.close_reason = "too_big"
        if ws.unmasked:
            c.close_reason = "unmasked"
        if c.close_reason == "too_big":
            hub.metrics.connections_refused["too_big"] += 1
        if c.close_reason in ("heartbeat", "slow"):
            # No close handshake with a peer that does not answer; and a plain close
            # would keep the socket until its unsent bytes drain, which may be never.
            transport.abort()
        hub.metrics.disconnects[c.close_reason] += 1
    return ws


async def _greet(hub: Hub, c: Client, since: str | None, epoch: str | None) -> None:
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


async def _read_requests(c: Client) -> None:
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
    raw = feed.decode_replay(await hub.redis.hget(hub.keys.replay, "state"))
    why = refusal(replay_status(raw, int(time.time() * 1000)), command)
    if why is not None:
        return _json({"error": "refused", "message": why}, 409)
    await hub.redis.xadd(
        hub.keys.control, {"c": orjson.dumps(command)}, maxlen=CONTROL_MAXLEN, approximate=True
    )
    return _json({"accepted": command}, 202)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; a private feed's figures need its token (or the metrics token)."""
    hub, policy = request.app[HUB], request.app[POLICY]
    needed = policy.metrics_token or policy.feed_token
    given = request.query.get("token") or bearer(request.headers.get("Authorization"))
    if needed is not None and not token_matches(needed, given):
        return _json({"error": "token", "message": "/metrics needs the metrics token"}, 401)
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
    """200 while the feed is followed, else 503 saying why; words only, no figures."""
    problem = request.app[HUB].healthy()
    if problem is None:
        return _json({"ok": True, "status": "following the feed"})
    return _json({"ok": False, "status": problem}, 503)


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
    redis_url: str,
    keys: Keys,
    tick_hz: float = 10.0,
    policy: Policy | None = None,
    tuning: Tuning | None = None,
) -> web.Application:
    """The aiohttp application; its background tasks start and stop with it.

    `tuning` defaults to `Tuning.from_env()` (TICKER_HEARTBEAT and the like)."""
    app = web.Application(middlewares=[no_tracebacks], client_max_size=64 * 1024)
    access = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    app[HUB] = Hub(redis_url, keys, tick_hz, tuning or Tuning.from_env())
    app[POLICY] = policy or Policy.from_env()
    app[LIMITER] = RateLimiter(app[POLICY].connects_per_ip_per_s, app[POLICY].connect_burst)

    async def background(app: web.Application) -> AsyncIterator[None]:
        hub = app[HUB]
        hub.reader = asyncio.create_task(hub.tail())
        tasks = [hub.reader] + [
            asyncio.create_task(t)
            for t in (hub.ticker(), hub.follow_replay(), hub.collect_garbage())
        ]
        hub.tasks = tasks
        yield
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, *hub.closing, return_exceptions=True)
        await hub.redis.aclose()
        hub.fanout.close()

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
