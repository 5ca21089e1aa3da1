"""Keeping a loop alive through outages: one backoff rule, one outage log, the worker loop.

`Backoff` is the capped exponential backoff with jitter that every reconnecting loop uses
(the aggregator and the merge step, the server's feed reader, the replay, the producer and
the client); `Outage` logs one line when an outage starts and one when it ends;
`run_forever` runs a worker (an aggregator or the merge step) until it is done, riding out
Redis outages.
"""

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from ticker.lease import Lease
from ticker.redis_io import TRANSIENT

log = logging.getLogger("ticker.aggregate")


class Backoff:
    """Capped exponential backoff: `first`, doubling up to `cap`; each wait is jittered by
    ±`jitter` (a fraction) so that many clients do not retry in step."""

    def __init__(self, first: float = 0.1, cap: float = 5.0, jitter: float = 0.5) -> None:
        self.first, self.cap, self.jitter = first, cap, jitter
        self.delay = first

    def reset(self) -> None:
        """Back to the first delay (after a success)."""
        self.delay = self.first

    def next(self) -> float:
        """The next wait in seconds (jittered); the delay after it doubles, up to the cap."""
        wait = self.delay * random.uniform(1 - self.jitter, 1 + self.jitter)
        self.delay = min(self.delay * 2, self.cap)
        return wait

    async def sleep(self) -> None:
        """Wait the next delay."""
        await asyncio.sleep(self.next())


class Outage:
    """One log line when an outage starts and one when it ends, however many retries."""

    def __init__(self, logger: logging.Logger, down: str, back: str) -> None:
        """`down` is formatted with the error's class name and text, `back` with the
        outage's length in seconds."""
        self.logger, self.down, self.back = logger, down, back
        self.since: float | None = None

    @property
    def on(self) -> bool:
        return self.since is not None

    def started(self, exc: BaseException) -> None:
        """An attempt failed; logged only if this begins an outage."""
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning(self.down, exc.__class__.__name__, exc)

    def ended(self) -> None:
        """An attempt succeeded; logged only if it ends an outage."""
        if self.since is not None:
            self.logger.info(self.back, time.monotonic() - self.since)
            self.since = None


class Worker(Protocol):
    """A process part that holds a lease while it runs (an aggregator, the merge step)."""

    redis: Any
    lease: Lease
    stopping: asyncio.Event

    async def run(self) -> None: ...


async def run_forever(worker: Worker) -> None:
    """Run, riding out Redis outages with capped exponential backoff and jitter.

    Logs one line when an outage starts and one when it ends; every retry reloads the
    committed state, so nothing read but uncommitted is counted twice.
    """
    backoff = Backoff()
    outage = Outage(
        log,
        "Redis unavailable (%s: %s); retrying with backoff",
        "Redis is back after %.1fs; resuming from the last commit",
    )
    while not worker.stopping.is_set():
        try:
            if outage.on:
                await worker.redis.ping()
                outage.ended()
                backoff.reset()
            await worker.run()
            await worker.lease.release()
            return
        except TRANSIENT as exc:
            outage.started(exc)
            await backoff.sleep()
