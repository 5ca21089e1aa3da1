"""The replay's I/O shell: write a DayPlan's batches to the orders stream on a replay clock.

The clock maps wall time to simulated time at `speed` (None = as fast as possible). A
batch is written once the clock has passed its slot's end. Writes are pipelined (paced, on
one Redis, each flush is a transaction, so the aggregator sees a slot whole); when the
aggregator falls behind (the stream holds more than `max_backlog` entries) the writer
waits rather than let Redis memory grow. After a Redis outage, or when started again with
the same run id, it reads the stream's last entry and continues after it: the seq numbers
are deterministic, so nothing is skipped, and anything written twice is dropped by the
aggregator.

The batches are generated and encoded ahead in a worker process (`simulator.ahead`), on
the other core, so the writer only writes and never waits for generation at 1x.

With `shards` > 1 the batches go round robin to the shards' streams (`shard_of`); every
shard gets the start and the end, and a restart continues after the least advanced shard.
"""

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from simulator.ahead import Ahead, Encoded, default_workers
from simulator.clock import ReplayClock
from simulator.generator import DayPlan
from ticker.core.batch import encode_end, encode_start, shard_of
from ticker.core.clock import format_time_of_day
from ticker.core.control import (
    HEARTBEAT_MS,
    BadCommand,
    Pause,
    Resume,
    Speed,
    decode_command,
)
from ticker.keys import Keys
from ticker.redis_io import TRANSIENT, client, is_cluster
from ticker.supervise import Backoff

log = logging.getLogger("ticker.replay")

PIPELINE_BATCHES = 32
# After the end entries, wait this long (far beyond replication lag) and check they are
# still there: a failover right after a write can lose it (replication is asynchronous).
END_CHECK_DELAY = 0.5
RESUME_SCAN_PAGES = 10  # how far back (x 200 entries) a restart looks for its own run
MAX_BACKLOG = 400
# A wait for the aggregators this long is shown in the state (`waiting`); this long, it is
# announced (`on_waiting`). Shorter waits are the usual flow control.
WAITING_SHOWN_S = 1.0
WAITING_NOTICE_S = 2.0
REPORT_EVERY_S = HEARTBEAT_MS / 1000 * 0.8  # the loops below may oversleep by 50 ms
CONTROL_BATCH = 100  # control entries read at a time
CONTROL_POLL_S = 0.1  # how often a waiting replay looks for commands
GENERATOR_POLL_S = 0.001  # how often the writer looks for a block still being made
# Run ids: what the stream accepts (1..64 characters); a seek adds `~<second of the day>`
# to the part before any `~`, which is therefore at most MAX_RUN_BASE characters.
MAX_RUN = 64
MAX_RUN_BASE = MAX_RUN - len("~86400")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(~[0-9]+)?$")


def run_id_problem(run: str) -> str | None:
    """Why `run` cannot be a run id (None if it can)."""
    base = run.split("~", 1)[0]
    if len(run) > MAX_RUN or len(base) > MAX_RUN_BASE:
        return (
            f"at most {MAX_RUN_BASE} characters (a seek adds ~<second>; the stream takes "
            f"{MAX_RUN}), got {len(run)}"
        )
    if not RUN_ID.match(run):
        return "letters, digits, '.', '_', ':' and '-' only, optionally ending in ~<second>"
    return None


@dataclass
class Progress:
    """What the replay has done so far, for the progress bar."""

    sim_ms: int
    orders: int = 0
    gmv_fen: int = 0
    batches: int = 0
    wall_s: float = 0.0
    speed_asked: float | None = None
    speed_reached: float = 0.0
    behind_ms: int = 0
    done: bool = False
    waiting: str | None = None  # what the replay waits for ("aggregator"), if anything
    backlog: int = 0  # entries in the orders stream(s) the aggregators have yet to take


class LostWrites(ConnectionError):
    """Entries Redis acknowledged are gone: a failover promoted a replica that had not
    received them. The replay resumes from what is there (a `TRANSIENT` error)."""


class _Seek(Exception):
    """A seek command: the replay restarts as a new run from `to_ms`."""

    def __init__(self, to_ms: int) -> None:
        self.to_ms = to_ms


class Replay:
    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        plan: DayPlan,
        run: str,
        speed: float | None,
        on_progress: Callable[[Progress], None] | None = None,
        max_backlog: int = MAX_BACKLOG,
        shards: int = 1,
        on_waiting: Callable[[int | None], None] | None = None,
        workers: int | None = None,
    ) -> None:
        """`on_waiting(backlog)` is called once a wait for the aggregators has lasted
        WAITING_NOTICE_S, and `on_waiting(None)` when that wait ends (default: log it).
        `workers`: processes generating ahead (default `default_workers()`; 0: none, the
        batches are made in this process)."""
        self.workers = default_workers() if workers is None else workers
        self.redis_url, self.keys, self.plan, self.run_id = redis_url, keys, plan, run
        self.shards = [keys] if shards == 1 else [keys.shard(i) for i in range(shards)]
        self.on_progress, self.max_backlog = on_progress, max_backlog
        self.on_waiting = on_waiting or _log_waiting
        # The first window: seeks may land anywhere in it, and it stays across seeks.
        self.window_from_ms, self.window_to_ms = plan.from_ms, plan.to_ms
        self.progress = Progress(sim_ms=plan.from_ms, speed_asked=speed)
        self.clock = ReplayClock(time.monotonic(), plan.from_ms, speed)
        self.redis = client(redis_url)
        self.started = time.monotonic()
        self.control_id: str | None = None  # newest control command seen
        self.queued: list[int] = []  # the shard of each batch in the pipeline
        self.newest: dict[int, bytes] = {}  # per shard, the last entry id acknowledged
        self.checks: list[tuple[int, bytes]] = []  # (shard, id) checks queued in the pipeline
        self.next_control_poll = 0.0
        self.next_report = 0.0

    async def last_written(self) -> list[int | None]:
        """Per shard, the highest seq this run has written there, if it was begun there."""
        return [await self._last_written_in(k) for k in self.shards]

    async def _last_written_in(self, keys: Keys) -> int | None:
        """The highest seq this run has written to one stream, if it was begun there.

        Looks at the newest entries of the stream (others, even malformed ones, may have
        been written after ours) and at the aggregator's state (the stream is trimmed
        behind it). Only this run's entries count; entries whose seq is not a number do
        not.
        """
        best: int | None = None
        newest = "+"
        for _ in range(RESUME_SCAN_PAGES):
            page = await self.redis.xrevrange(keys.orders, max=newest, count=200)
            for _id, fields in page:
                if fields.get(b"run") == self.run_id.encode():
                    try:
                        seq = int(fields[b"seq"])
                    except (KeyError, ValueError):
                        continue
                    if 0 <= seq <= self.plan.end_seq:
                        best = seq if best is None else max(best, seq)
            if best is not None or len(page) < 200:
                break
            newest = f"({page[-1][0].decode()}"
        raw = await self.redis.hget(keys.state, "state")
        if raw:
            committed = orjson.loads(raw)
            if committed.get("run") == self.run_id:
                best = max(best or 0, int(committed.get("last_seq", 0)))
        return best

    async def run(self) -> Progress:
        """Replay the whole window, riding out Redis outages and obeying seeks."""
        backoff = Backoff()
        while True:
            try:
                if self.control_id is None:
                    last = await self.redis.xrevrange(self.keys.control, count=1)
                    self.control_id = last[0][0].decode() if last else "0-0"
                await self._run_once()
                return self.progress
            except _Seek as seek:
                self._restart_at(seek.to_ms)
            except TRANSIENT as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Stopping (SIGINT): the Redis client turned the cancellation of the
                    # command in flight into a connection error; do not retry.
                    raise asyncio.CancelledError from exc
                wait = backoff.next()
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, wait)
                await asyncio.sleep(wait)

    def _restart_at(self, to_ms: int) -> None:
        plan = self.plan
        self.plan = DayPlan(plan.profile, plan.scale, to_ms, plan.to_ms, plan.seed, plan.batch_size)
        base = self.run_id.split("~", 1)[0]
        self.run_id = f"{base[:MAX_RUN_BASE]}~{to_ms // 1000}"
        self.progress = Progress(sim_ms=to_ms, speed_asked=self.clock.speed)
        self.clock.reanchor(time.monotonic(), to_ms)
        log.info("seeking to %s as run %s", format_time_of_day(to_ms), self.run_id)

    async def _run_once(self) -> None:
        plan, shards = self.plan, len(self.shards)
        meta = dataclasses.replace(plan.meta(), shards=shards)
        written = await self.last_written()
        for i, seq in enumerate(written):
            if seq is None:
                await self.redis.xadd(self.shards[i].orders, encode_start(self.run_id, meta, i))
        done = [seq or 0 for seq in written]
        after = min(done)
        if after >= plan.end_seq:
            self.progress.done = True
            self.progress.sim_ms = plan.to_ms
            await self._report(force=True)
            return
        if after and not self.progress.batches:
            # Resuming a run begun by an earlier process: the clock starts where that one
            # stopped, not at the window's start (which would idle until it caught up).
            resumed_at = plan.end_of_seq(min(after, plan.last_orders_seq))
            self.clock.reanchor(time.monotonic(), resumed_at)
            self.progress.sim_ms = resumed_at
        # A paced run on one Redis writes each flush as a transaction: a reader blocked on
        # the stream wakes once with the whole flush (a 100 ms slot at 1x), not after its
        # first entry, so the aggregator makes one commit of it rather than a small one and
        # then the rest. (At max speed throughput matters, not a slot's latency; a cluster
        # cannot: the shards' streams live on different nodes.)
        atomic = self.clock.speed is not None and not is_cluster(self.redis_url)
        pipe = self.redis.pipeline(transaction=atomic)
        queued = 0
        self.queued, self.newest, self.checks = [], {}, []
        clock_started = bool(self.progress.batches)
        with Ahead(plan, self.run_id, after, self.workers) as ahead:
            while not ahead.finished:
                block = ahead.next()
                if block is None:  # not made yet: send what is queued, then wait for it
                    if queued:
                        await self._flush(pipe)
                        queued = 0
                    block = await self._wait_for_generator(ahead)
                if not clock_started:
                    # Nothing written yet: the clock starts now that the first batches are
                    # made, so the first block's generation (~0.15 s at the peak) does not
                    # make the first slots late; later blocks are made ahead of their time.
                    clock_started = True
                    if not self.clock.paused:
                        self.clock.reanchor(time.monotonic(), self.progress.sim_ms)
                for batch in block:
                    shard = shard_of(batch.seq, shards)
                    if batch.seq <= done[shard]:
                        continue  # this shard has it (a restart: the shards got unequally far)
                    due = self.clock.due(batch.t1)
                    if queued and (due is None or due > time.monotonic()):
                        await self._flush(pipe)  # send what is due before waiting
                        queued = 0
                    await self._wait_for_clock(batch.t1)
                    pipe.xadd(self.shards[shard].orders, batch.fields)
                    self.queued.append(shard)
                    queued += 1
                    p = self.progress
                    p.orders += batch.n
                    p.gmv_fen += batch.gmv_fen
                    p.batches += 1
                    p.sim_ms = batch.t1
                    if queued >= PIPELINE_BATCHES:
                        await self._flush(pipe)
                        queued = 0
        if queued:
            await self._flush(pipe)
        await self._wait_for_clock(plan.to_ms)
        for i, (keys, seq) in enumerate(zip(self.shards, done, strict=True)):
            if seq < plan.end_seq:
                end = encode_end(self.run_id, plan.end_seq, plan.to_ms)
                self.newest[i] = await self.redis.xadd(keys.orders, end)
        if is_cluster(self.redis_url):
            await asyncio.sleep(END_CHECK_DELAY)
            await self._check_newest()
        self.progress.sim_ms = plan.to_ms
        self.progress.done = True
        await self._report(force=True)

    async def _flush(self, pipe: "object") -> None:
        """Send the queued batches; check that the last flush's are still there; wait
        while the aggregators are behind.

        The checks were queued ahead of this flush's batches: the last entry of a stream
        is never trimmed (trimming keeps the newest entry delivered), but once newer ones
        are written it may be, legitimately."""
        for keys in self.shards:
            pipe.xlen(keys.orders)  # type: ignore[attr-defined]
        replies = await pipe.execute()  # type: ignore[attr-defined]
        checked = len(self.checks)
        await self._lost_if_missing(self.checks, replies[:checked])
        written = replies[checked : checked + len(self.queued)]
        self.newest.update(zip(self.queued, written, strict=True))
        self.queued = []
        self.checks = list(self.newest.items())
        for shard, entry_id in self.checks:
            pipe.xrange(self.shards[shard].orders, min=entry_id, max=entry_id)  # type: ignore[attr-defined]
        backlog = max(replies[-len(self.shards) :])
        if backlog > self.max_backlog:
            await self._wait_for_aggregators(backlog)

    async def _wait_for_aggregators(self, backlog: int) -> None:
        """Wait until the aggregators have taken the backlog down to max_backlog, beating
        and obeying commands meanwhile; say so once the wait lasts."""
        p, since, noticed = self.progress, time.monotonic(), False
        p.backlog = backlog
        try:
            while backlog > self.max_backlog:
                now = time.monotonic()
                if now - since >= WAITING_SHOWN_S and p.waiting is None:
                    p.waiting = "aggregator"
                    await self._report(force=True)
                if now - since >= WAITING_NOTICE_S and not noticed:
                    noticed = True
                    self.on_waiting(backlog)
                await self._tend()
                # Short waits are the usual flow control: poll fast, then gently.
                await asyncio.sleep(0.005 if now - since < 0.5 else 0.05)
                backlog = max([await self.redis.xlen(keys.orders) for keys in self.shards])
                p.backlog = backlog
        finally:
            p.waiting = None  # done waiting, or seeking, or Redis is gone
        if noticed:
            self.on_waiting(None)

    async def _check_newest(self) -> None:
        checks = list(self.newest.items())
        found = [
            await self.redis.xrange(self.shards[shard].orders, min=entry_id, max=entry_id)
            for shard, entry_id in checks
        ]
        await self._lost_if_missing(checks, found)

    async def _lost_if_missing(self, checks: list[tuple[int, bytes]], found: list[object]) -> None:
        """Raise LostWrites if an entry we wrote is gone but not trimmed.

        With one producer, our newest entry is the stream's newest and is never trimmed.
        With several (another run, a second replay), newer entries follow ours and the
        aggregators may legitimately trim ours once they have taken it: an entry older than
        the stream's first one was trimmed. A failover loses the newest entries, so a lost
        one is never older than what the stream still holds."""
        for (shard, entry_id), page in zip(checks, found, strict=False):
            if page:
                continue
            first = await self.redis.xrange(self.shards[shard].orders, count=1)
            if first and _id_key(first[0][0]) > _id_key(entry_id):
                continue  # trimmed behind the aggregators
            raise LostWrites(
                f"entry {entry_id.decode()} of {self.shards[shard].orders} was acknowledged "
                "but is gone (a failover?); resuming from what the stream holds"
            )

    async def _wait_for_generator(self, ahead: Ahead) -> list[Encoded]:
        """Wait for the next block to be made, obeying control commands meanwhile."""
        while True:
            await self._tend()
            block = ahead.next()
            if block is not None:
                return block
            await asyncio.sleep(GENERATOR_POLL_S)

    async def _wait_for_clock(self, sim_ms: int) -> None:
        """Wait until the replay clock reaches sim_ms, obeying control commands meanwhile."""
        while True:
            now = await self._tend()
            due = self.clock.due(sim_ms)
            if due is not None and due <= now:
                self.progress.behind_ms = self.clock.behind_ms(sim_ms, now)
                return
            await asyncio.sleep(0.05 if due is None else min(0.05, due - now))

    async def _tend(self) -> float:
        """What a waiting replay keeps doing: obey the commands sent (every CONTROL_POLL_S)
        and beat (every REPORT_EVERY_S). Returns the monotonic time it looked at."""
        now = time.monotonic()
        if now >= self.next_control_poll:
            self.next_control_poll = now + CONTROL_POLL_S
            await self._obey_controls()
        await self._report()  # only when due
        return now

    async def _obey_controls(self) -> None:
        """Obey the commands sent since the last look; skip (and log) malformed ones."""
        reply = await self.redis.xread(
            {self.keys.control: self.control_id or "0-0"}, count=CONTROL_BATCH
        )
        for entry_id, fields in reply[0][1] if reply else []:
            self.control_id = entry_id.decode()
            try:
                command = decode_command(fields)
            except BadCommand as exc:
                log.warning("skipping control entry %s: %s", self.control_id, exc)
                continue
            now, at = time.monotonic(), self.progress.sim_ms
            log.info("replay command: %s", command.wire())
            if isinstance(command, Pause):
                self.clock.pause()
            elif isinstance(command, Resume):
                self.clock.resume(now, at)
            elif isinstance(command, Speed):
                self.clock.set_speed(command.speed, now, at)
                self.progress.speed_asked = self.clock.speed
            elif not self.window_from_ms <= command.to_ms < self.window_to_ms:
                log.warning(
                    "skipping control entry %s: seek to %s is outside the window %s to %s",
                    self.control_id,
                    *(
                        format_time_of_day(t, millis=False)
                        for t in (command.to_ms, self.window_from_ms, self.window_to_ms)
                    ),
                )
            else:
                raise _Seek(command.to_ms)  # restart as a new run from there
        if reply:
            await self._report(force=True)

    async def _report(self, force: bool = False) -> None:
        """Update the progress bar and the replay state that the server shows."""
        now = time.monotonic()
        if not force and now < self.next_report:
            return
        self.next_report = now + REPORT_EVERY_S
        p = self.progress
        p.wall_s = now - self.started
        p.speed_reached = self.clock.speed_reached(p.sim_ms, now)
        state = {
            "run": self.run_id,
            "state": "ended" if p.done else "paused" if self.clock.paused else "running",
            "speed": self.clock.speed,
            "speed_reached": round(p.speed_reached, 2),
            "behind_ms": p.behind_ms,
            "sim_time_ms": p.sim_ms,
            "from_ms": self.plan.from_ms,
            "to_ms": self.plan.to_ms,
            "window_from_ms": self.window_from_ms,
            "window_to_ms": self.window_to_ms,
            "heartbeat_ms": int(time.time() * 1000),
            "waiting": None if p.done else p.waiting,
        }
        await self.redis.hset(self.keys.replay, "state", orjson.dumps(state))
        if self.on_progress:
            self.on_progress(p)


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _log_waiting(backlog: int | None) -> None:
    if backlog is None:
        log.info("the aggregators caught up; writing again")
    else:
        log.warning(
            "waiting for an aggregator: %s entries are not yet consumed; start one with "
            "`ticker aggregate`",
            f"{backlog:,}",
        )
