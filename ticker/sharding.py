"""One aggregator process of a sharded run: a worker per shard, and the merge step.

Every process offers to consume every shard; a lease per shard lets one consume it at a
time. Processes share the shards evenly: each keeps a heartbeat in a sorted set, and
takes a free shard only while it holds fewer than its share (`ceil(shards / live
processes)`), handing one back after a commit while it holds more. When a process dies
its leases expire (LEASE_MS) and so does its heartbeat, the others' share grows, and they
take its shards over. Every process also stands by for the merge step's lease.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import orjson

from ticker.aggregator import Aggregator, RunIncomplete
from ticker.core.hold import HOLD_SECONDS
from ticker.errors import FencedOff
from ticker.keys import Keys
from ticker.lease import LEASE_MS, token
from ticker.merge import Merger
from ticker.redis_io import TRANSIENT, Client, client
from ticker.supervise import Worker, run_forever

log = logging.getLogger("ticker.sharding")

HEARTBEAT_S = 1.0


@dataclass
class Balance:
    """Which shards this process holds, and its fair share of them."""

    shards: int
    live: int = 1  # aggregator processes with a current heartbeat, this one included
    owned: set[int] = field(default_factory=set)

    def target(self) -> int:
        return -(-self.shards // max(1, self.live))


@dataclass
class Share:
    """One shard's view of the balance: when its worker may take it and must give it up."""

    balance: Balance
    shard: int

    def may_take(self) -> bool:
        b = self.balance
        return self.shard in b.owned or len(b.owned) < b.target()

    def took(self) -> None:
        self.balance.owned.add(self.shard)

    def should_give_up(self) -> bool:
        b = self.balance
        if len(b.owned) > b.target():
            b.owned.discard(self.shard)  # at once, so no other worker also gives up
            return True
        return False

    def lost(self) -> None:
        self.balance.owned.discard(self.shard)


async def _keep_running(worker: Worker, what: str, on_exit: "Share | None" = None) -> None:
    """Run a worker until stopped; after a hand-over or a lost lease, stand by again."""
    while not worker.stopping.is_set():
        try:
            await run_forever(worker)
        except FencedOff as exc:
            log.warning("%s: %s; standing by", what, exc)
        if on_exit:
            on_exit.lost()


async def _heartbeat(
    redis: Client, keys: Keys, name: str, balance: Balance, stopping: asyncio.Event
) -> None:
    while not stopping.is_set():
        now = int(time.time() * 1000)
        try:
            pipe = redis.pipeline(transaction=False)
            pipe.zadd(keys.aggregators, {name: now + LEASE_MS})
            pipe.zremrangebyscore(keys.aggregators, 0, now)
            pipe.zcard(keys.aggregators)
            balance.live = (await pipe.execute())[-1]
        except TRANSIENT:
            pass  # the workers log the outage
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), HEARTBEAT_S)
    with contextlib.suppress(*TRANSIENT):
        await redis.zrem(keys.aggregators, name)


async def _until_ended(
    redis: Client, keys: Keys, stopping: asyncio.Event, workers: list[Aggregator]
) -> None:
    """In burst mode: stop every part once the merged state says the replay ended, or
    once a shard found that the run cannot end (see `Aggregator.incomplete`)."""
    while not stopping.is_set():
        if any(w.incomplete for w in workers):
            stopping.set()
            return
        try:
            raw = await redis.hget(keys.state, "state")
            if raw and orjson.loads(raw).get("ended"):
                stopping.set()
                return
        except TRANSIENT:
            pass
        await asyncio.sleep(0.2)


async def run_sharded(
    redis_url: str,
    keys: Keys,
    shards: int,
    name: str,
    stopping: asyncio.Event,
    burst: bool = False,
    hold_seconds: float = HOLD_SECONDS,
) -> list[Aggregator]:
    """Run this process's part of a sharded aggregation until `stopping` is set."""
    balance = Balance(shards)
    shares = [Share(balance, i) for i in range(shards)]
    workers = []
    for i in range(shards):
        agg = Aggregator(
            redis_url,
            keys.shard(i),
            f"{name}/{i}",
            shards=shards,
            share=shares[i],
            hold_seconds=hold_seconds,
        )
        agg.stopping = stopping
        workers.append(agg)
    merger = Merger(redis_url, keys, shards, name)
    merger.stopping = stopping
    redis = client(redis_url)
    tasks = [
        *(_keep_running(w, f"shard {i}", shares[i]) for i, w in enumerate(workers)),
        _keep_running(merger, "merge step"),
        # One member per process, even when two processes were given the same name.
        _heartbeat(redis, keys, token(name), balance, stopping),
    ]
    if burst:
        tasks.append(_until_ended(redis, keys, stopping, workers))
    try:
        await asyncio.gather(*tasks)
    finally:
        parts: list[Worker] = [*workers, merger]
        for part in parts:
            await part.redis.aclose()
        await redis.aclose()
    reasons = [w.incomplete for w in workers if w.incomplete]
    if burst and reasons:
        raise RunIncomplete(reasons[0])
    return workers
