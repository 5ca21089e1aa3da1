"""The latest state from the feed, the replay's state, and the connected clients."""

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import WSCloseCode
from redis.exceptions import ResponseError

from ticker import feed
from ticker.core import timeline
from ticker.core.control import replay_status
from ticker.core.pace import Pace
from ticker.metrics import ServerMetrics
from ticker.redis_io import TRANSIENT
from ticker.server.connection import Client
from ticker.server.fanout import CHUNK, PARALLEL_FROM, Fanout, Share
from ticker.server.outbox import Route
from ticker.server.source import FeedSource
from ticker.server.ticks import TickVersion
from ticker.server.tuning import GC_FREEZE_EVERY, GC_FULL_AFTER, GC_FULL_EVERY, Tuning
from ticker.supervise import Backoff

log = logging.getLogger("ticker.serve")
STOP_TIMEOUT = 5.0  # seconds the background tasks and close handshakes get to end

REPLAY_POLL_S = 0.25  # how often the replay's state is read (screens learn within 1 s)
READER_STALE_S = 5.0  # the feed reader heard from Redis this recently, or /healthz is 503
RESUME_PAGE = 64  # feed entries read per XRANGE while a resume looks for missed milestones
RESUME_MAX_ENTRIES = 2_000  # a resume further behind gets a fresh snapshot instead
RESUME_READERS = 4  # resumes reading the feed at once, per server
# A client that connects before the hub has read the feed once (a server just started)
# waits this long for it; greeted earlier, it would get an empty snapshot at position 0-0.
LOAD_WAIT_S = 10.0


Message = tuple[feed.PositionKey, bytes]  # a message's position (as a key) and JSON text


def milestones(
    position: str, fired: list[dict[str, Any]]
) -> Iterator[tuple[feed.PositionKey, bytes]]:
    """The milestone messages of the feed entry at `position` that fired `fired`: each
    one's position (as a key) and JSON text. Live entries and resumes both use it."""
    for f, at in zip(fired, feed.milestone_positions(position, len(fired)), strict=True):
        yield feed.position_key(at), feed.milestone(f, at).encode()


class Hub:
    """The latest state from the feed, the replay's state, and the connected clients."""

    def __init__(
        self, source: FeedSource, tick_hz: float = 10.0, tuning: Tuning | None = None
    ) -> None:
        self.source, self.tick_interval = source, 1.0 / tick_hz
        self.tuning = tuning or Tuning()
        # Its writer threads start with the hub (`start`), inside the app's lifecycle.
        self.fanout = Fanout(self.tuning.send_threads, self.tuning.native_writes)
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
        self.serial = 0  # of the newest tick broadcast (`TickVersion.serial`)
        self.redis_ok = False
        self.read_at = -READER_STALE_S  # time.monotonic() of the feed reader's last reply
        self.reader: asyncio.Task[None] | None = None  # the task running `tail`
        self.tasks: list[asyncio.Task[Any]] = []  # all background tasks, the reader too
        self.resumes = asyncio.Semaphore(RESUME_READERS)
        self.resume_readers = 0  # resumes reading the feed now
        self.closing: set[asyncio.Task[Any]] = set()  # close handshakes under way
        self.loaded = asyncio.Event()  # the feed has been read once: state and epoch are known

    async def start(self) -> None:
        """Start the writer threads and the background tasks: the feed reader, the ticks,
        the replay's state and the garbage collector's pacing."""
        self.fanout.start()
        self.reader = asyncio.create_task(self.tail())
        self.tasks = [self.reader] + [
            asyncio.create_task(t)
            for t in (self.ticker(), self.follow_replay(), self.collect_garbage())
        ]

    async def stop(self) -> None:
        """Stop the tasks and the writer threads; a task that had failed is logged. Close
        handshakes under way get their own bounded time; whatever has not ended after
        STOP_TIMEOUT is logged and left, so a server always finishes stopping."""
        for t in self.tasks:
            t.cancel()
        pending = {*self.tasks, *self.closing}
        done, stuck = await asyncio.wait(pending, timeout=STOP_TIMEOUT) if pending else ((), ())
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.error(
                    "a background task of the server had failed before it was stopped",
                    exc_info=t.exception(),
                )
        for t in stuck:
            t.cancel()
            log.error("a task of the server did not stop within %.0f s: %r", STOP_TIMEOUT, t)
        self.fanout.close()

    def set_state(self, state: dict[str, Any], position: str, curve: list[timeline.Point]) -> None:
        self.curve, self.position = curve, position
        self.tick_state = {**state, "replay": self.replay}
        self.state = {**self.tick_state, "curve": curve}

    async def load(self) -> None:
        """Start from the newest feed entry and the full curve, read in one transaction
        (the keys share a hash tag), so the curve is the one of that entry."""
        head = await self.source.head()
        self.epoch = head.epoch
        state, position = {**feed.EMPTY_STATE}, "0-0"
        if head.last is not None:
            position, fields = head.last
            try:
                state, _ = feed.parse_entry(fields)
            except feed.BadFeedEntry as exc:
                self.skip_entry(position, str(exc))
        tail = state.get("curve") or []
        from_ms = int(state.get("from_ms") or 0)
        full, _ = timeline.merge_tail(feed.decode_curve(head.curve), tail, from_ms)
        self.set_state(state, position, full)
        self.dirty.set()
        self.loaded.set()

    async def wait_loaded(self) -> bool:
        """Whether the feed's state is known, after waiting up to LOAD_WAIT_S for the first
        read (Redis slow or away while the server starts)."""
        if not self.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOAD_WAIT_S):
                    await self.loaded.wait()
        return self.loaded.is_set()

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
        backoff, loaded = Backoff(), False
        while True:
            try:
                if loaded:
                    await self.reconnect()
                else:
                    await self.load()
                    loaded = True
                self.redis_ok, self.read_at = True, time.monotonic()
                backoff.reset()
                while True:
                    entries = await self.source.after(self.position, block_ms=1000, count=500)
                    self.read_at = time.monotonic()
                    for position, fields in entries:
                        await self.on_entry(position, fields)
                    await self.check_epoch()
            except TRANSIENT as exc:
                self.redis_ok, wait = False, backoff.next()
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, wait)
            except Exception:
                self.redis_ok, wait = False, backoff.next()
                log.exception("the feed reader failed; restarting it in %.1fs", wait)
            await asyncio.sleep(wait)

    async def reconnect(self) -> None:
        """Back after an outage: go on from the position reached if the feed still holds
        what follows it; else (trimmed meanwhile) take the newest entry and announce the
        milestones its state lists that ours did not; a new epoch resyncs everyone."""
        if await self.check_epoch():
            return
        first = await self.source.page("-", "+", count=1)
        if not first or self.position == "0-0":
            return
        if feed.position_key(first[0][0]) <= feed.position_key(self.position):
            return
        before = {m.get("id") for m in self.state.get("milestones") or []}
        log.warning("feed entries after %s were trimmed during the outage", self.position)
        await self.load()
        missed = [m for m in self.state.get("milestones") or [] if m.get("id") not in before]
        self.announce(self.position, missed)

    async def check_epoch(self) -> bool:
        """Notice a new epoch (Redis lost the feed): load afresh and tell clients to
        reconnect (1012), so they resume into a fresh snapshot. True if it changed."""
        epoch = await self.source.epoch()
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
                c.goodbye(WSCloseCode.SERVICE_RESTART, b"the feed was reset")
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
                self.replay_raw = await self.source.replay()
            except TRANSIENT:
                pass  # judged on the last state read, so a heartbeat unseen goes stale
            except ResponseError as exc:  # e.g. the key is not a hash: say so, keep polling
                log.warning("could not read the replay's state: %s", exc)
                self.replay_raw = None
            except Exception:
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
            self.broadcast_urgent(None, feed.replay(status).encode(), topic="replay")

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
        for key, text in milestones(position, fired):
            self.broadcast_urgent(key, text)

    async def fold_curve(self, state: dict[str, Any]) -> list[timeline.Point]:
        """The full curve with this entry's tail folded in; read again from Redis when
        the tail does not join (or a new run began)."""
        tail = state.get("curve") or []
        from_ms = int(state.get("from_ms") or 0)
        if state.get("run") == self.state.get("run"):
            curve, joined = timeline.merge_tail(self.curve, tail, from_ms)
            if joined:
                return curve
        full = feed.decode_curve(await self.source.curve())
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
            route = c.route(key)
            if route is Route.SOCKET:
                raw.append(c)
            elif route is Route.TRANSPORT:
                c.transport.write(frame)
                self.count_direct(1, len(text))
            elif not c.offer(key, text):
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
        self.serial += 1
        # A copy: a replay status that comes later must not change what this tick carried
        # (a delta client's next patch is taken from it).
        version = TickVersion(self.serial, self.position, dict(self.tick_state))
        self.fanout.send(self._tick_shares(version, now), len(self.clients) >= PARALLEL_FROM)

    def _tick_shares(self, version: TickVersion, now: float) -> Iterator[Share]:
        """Choose each client's path for this tick; yield the raw writes, a share at a time.

        Runs inside `Fanout.send`, with the event loop held: the clients cannot change."""
        key = version.key
        # Once per kind of client (its topics, and for a delta client the tick it last
        # received): the JSON text and its frame; the clients to write raw. Most delta
        # clients are in step, so they share one patch.
        encoded: dict[tuple[frozenset[str], TickVersion | None], tuple[bytes, bytes]] = {}
        raw: dict[tuple[frozenset[str], TickVersion | None], list[Client]] = {}
        for c in self.clients:
            route = c.route_tick(key, now)
            if route is Route.QUEUE:
                c.offer_tick(key, version)  # its sender chooses the text when it sends
                continue
            sub = c.sub
            kind = (sub.topics, c.base if sub.delta else None)
            enc = encoded.get(kind)
            if enc is None:
                enc = encoded[kind] = version.text(kind[1], sub.topics)
                raw[kind] = []
            c.base = version
            if route is Route.SOCKET:
                share = raw[kind]
                share.append(c)
                if len(share) == CHUNK:
                    raw[kind] = []
                    self.count_direct(CHUNK, len(enc[0]))
                    yield enc[1], share
            else:
                c.transport.write(enc[1])
                self.count_direct(1, len(enc[0]))
        for kind, share in raw.items():
            if share:
                self.count_direct(len(share), len(encoded[kind][0]))
                yield encoded[kind][1], share

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
                if not await self.source.page(entry, entry, count=1):
                    return None
                if upto == "0-0" or seen >= feed.position_key(upto):
                    return out
                start, read = entry if part else f"({entry}", 0
                while read < RESUME_MAX_ENTRIES:
                    page = await self.source.page(start, upto, count=RESUME_PAGE)
                    read += len(page)
                    self.metrics.resume_entries_read += len(page)
                    for position, fields in page:
                        try:
                            _, fired = feed.parse_entry(fields)
                        except feed.BadFeedEntry:
                            continue
                        out += [text for key, text in milestones(position, fired) if key > seen]
                    if len(page) < RESUME_PAGE:
                        return out
                    start = f"({page[-1][0]}"
                return None
            finally:
                self.resume_readers -= 1
