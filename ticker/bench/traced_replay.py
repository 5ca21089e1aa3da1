"""`ticker replay`, recording when each batch was written: for the latency benchmark.

The same Replay class as `ticker replay` (same pacing, pipelining and backlog control);
only its flush also keeps the id Redis gave each orders entry (its milliseconds are the
Redis server's clock when the XADD ran, i.e. the batch's write time), the cumulative order
count the batch brings the run to, and its simulated end `t1`. Written to a JSON file.
"""

import argparse
import asyncio
import json
import time
from fractions import Fraction
from typing import Any

from simulator import profile
from simulator.generator import DayPlan
from simulator.replay import Replay
from ticker.keys import Keys


def _field(args: tuple[Any, ...], name: bytes) -> bytes | None:
    for i in range(len(args) - 1):
        if args[i] == name:
            value: bytes = args[i + 1]
            return value
    return None


class TracedReplay(Replay):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.cumulative = self.plan.base_orders
        self.trace: list[tuple[str, int, int]] = []  # (entry id, cumulative orders, t1)
        self.started_wall = time.time()
        self.generator_waits: list[float] = []  # seconds each wait for generation took

    async def _wait_for_generator(self, ahead: Any) -> Any:
        started = time.monotonic()
        try:
            return await super()._wait_for_generator(ahead)
        finally:
            self.generator_waits.append(time.monotonic() - started)

    async def _flush(self, pipe: Any) -> None:
        heads = [(_field(args, b"n"), _field(args, b"t1")) for args, _ in pipe.command_stack]
        pipe.xlen(self.keys.orders)
        replies = await pipe.execute()
        for (n, t1), entry_id in zip(heads, replies[:-1], strict=True):
            if n is not None and t1 is not None:
                self.cumulative += int(n)
                self.trace.append((entry_id.decode(), self.cumulative, int(t1)))
        backlog = replies[-1]
        while backlog > self.max_backlog:
            await asyncio.sleep(0.005)
            backlog = await self.redis.xlen(self.keys.orders)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ticker.bench.traced_replay")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--from-ms", type=int, default=0)
    p.add_argument("--to-ms", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", required=True, help="file to write the trace to (JSON)")
    args = p.parse_args(argv)
    plan = DayPlan(
        profile.load("2018"), Fraction(1), args.from_ms, args.to_ms, args.seed, args.batch_size
    )

    async def go() -> TracedReplay:
        replay = TracedReplay(
            args.redis_url, Keys(args.namespace), plan, f"bench-{time.time_ns()}", args.speed
        )
        replay.started_wall = time.time()
        try:
            await replay.run()
        finally:
            await replay.redis.aclose()
        # The wall time the replay clock maps `from_ms` to (it starts once the first batches
        # are made), so that each batch's due time is the clock's own.
        clock = replay.clock
        anchor_wall = time.time() - (time.monotonic() - clock.anchor_wall)
        replay.started_wall = anchor_wall - (clock.anchor_sim - args.from_ms) / 1000 / args.speed
        return replay

    replay = asyncio.run(go())
    with open(args.trace, "w") as f:
        json.dump(
            {
                "started_wall": replay.started_wall,
                "from_ms": args.from_ms,
                "speed": args.speed,
                "batches": replay.trace,
                "generator_waits_s": replay.generator_waits,
            },
            f,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
