"""The replay's I/O shell: write a DayPlan's batches to the orders stream on a replay clock.

The clock maps wall time to simulated time at `speed` (None = as fast as possible). A
batch is written once the clock has passed its slot's end. Writes are pipelined; when the
aggregator falls behind (the stream holds more than `max_backlog` entries) the writer
waits rather than let Redis memory grow. After a Redis outage, or when started again with
the same run id, it reads the stream's last entry and continues after it: the seq numbers
are deterministic, so nothing is skipped, and anything written twice is dropped by the
aggregator.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulator.generator import DayPlan
from ticker.core.batch import encode_end, encode_orders, encode_start
from ticker.keys import Keys
from ticker.redis_io import TRANSIENT, client

log = logging.getLogger("ticker.replay")

PIPELINE_BATCHES = 32
MAX_BACKLOG = 400


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
    ) -> None:
        self.redis_url, self.keys, self.plan, self.run_id = redis_url, keys, plan, run
        self.speed, self.on_progress, self.max_backlog = speed, on_progress, max_backlog
        self.progress = Progress(sim_ms=plan.from_ms, speed_asked=speed)
        self.redis = client(redis_url)

    async def last_written_seq(self) -> int | None:
        """The seq of this run's newest entry in the stream, if the run was begun."""
        last = await self.redis.xrevrange(self.keys.orders, count=1)
        if not last:
            return None
        fields = last[0][1]
        if fields.get(b"run", b"").decode(errors="replace") != self.run_id:
            return None
        return int(fields[b"seq"])

    async def run(self) -> Progress:
        """Replay the whole window, riding out Redis outages; return the final progress."""
        delay = 0.1
        started = time.monotonic()
        while True:
            try:
                await self._run_once(started)
                return self.progress
            except TRANSIENT as exc:
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + os.urandom(1)[0] / 255))
                delay = min(delay * 2, 5.0)

    async def _run_once(self, started: float) -> None:
        plan, keys = self.plan, self.keys
        after = await self.last_written_seq()
        if after is None:
            await self.redis.xadd(keys.orders, encode_start(self.run_id, plan.meta()))
            after = 0
        if after >= plan.end_seq:
            self.progress.done = True
            return
        pipe = self.redis.pipeline(transaction=False)
        queued = 0
        for batch in plan.batches(after_seq=after):
            if queued and self._due(batch.t1, started) > time.monotonic():
                await self._flush(pipe)  # send what is due before sleeping
                queued = 0
            await self._wait_for_clock(batch.t1, started)
            pipe.xadd(
                keys.orders,
                encode_orders(self.run_id, batch.seq, batch.t0, batch.t1, batch.columns),
            )
            queued += 1
            p = self.progress
            p.orders += batch.n
            p.gmv_fen += int(batch.columns["amt"].sum())
            p.batches += 1
            p.sim_ms = batch.t1
            if queued >= PIPELINE_BATCHES:
                await self._flush(pipe)
                queued = 0
        if queued:
            await self._flush(pipe)
        await self._wait_for_clock(plan.to_ms, started)
        await self.redis.xadd(keys.orders, encode_end(self.run_id, plan.end_seq, plan.to_ms))
        self.progress.sim_ms = plan.to_ms
        self.progress.done = True
        self._report(started)

    async def _flush(self, pipe: "object") -> None:
        pipe.xlen(self.keys.orders)  # type: ignore[attr-defined]
        replies = await pipe.execute()  # type: ignore[attr-defined]
        backlog = replies[-1]
        while backlog > self.max_backlog:
            await asyncio.sleep(0.005)
            backlog = await self.redis.xlen(self.keys.orders)

    def _due(self, sim_ms: int, started: float) -> float:
        """The monotonic time at which the replay clock reaches sim_ms."""
        if self.speed is None:
            return started
        return started + (sim_ms - self.plan.from_ms) / 1000 / self.speed

    async def _wait_for_clock(self, sim_ms: int, started: float) -> None:
        """Sleep until the replay clock reaches sim_ms (never, at max speed)."""
        p = self.progress
        now = time.monotonic()
        if self.speed is not None:
            due = self._due(sim_ms, started)
            if due > now:
                await asyncio.sleep(due - now)
                now = time.monotonic()
            p.behind_ms = max(0, int((now - due) * 1000 * self.speed))
        if now - p.wall_s - started >= 0.25:
            self._report(started)

    def _report(self, started: float) -> None:
        p = self.progress
        p.wall_s = time.monotonic() - started
        if p.wall_s > 0:
            p.speed_reached = (p.sim_ms - self.plan.from_ms) / 1000 / p.wall_s
        if self.on_progress:
            self.on_progress(p)
