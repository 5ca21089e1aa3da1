"""The naive pipeline the benchmark compares against: the Redis Streams tutorial design.

`produce` writes one stream entry per order (its six attributes as fields) with one XADD
each, for a number of seconds, the orders being those of the 2018 replay from 00:00; then
an `end` entry. `consume` reads them through a consumer group (XREADGROUP COUNT 100) and,
per order, does one HINCRBY of the GMV total and one XACK. `--pipeline N` sends N commands
per round trip (1, the tutorial, by default). Each prints one JSON line at the end.
"""

import argparse
import json
import time
from fractions import Fraction

import redis

BLOCK = 100
GROUP = "naive"


def produce(r: "redis.Redis", stream: str, seconds: float, pipeline: int) -> dict[str, int | float]:
    from simulator import profile
    from simulator.generator import DayPlan

    plan = DayPlan(profile.load("2018"), Fraction(1), 0, 3_600_000, 0, 4000)
    orders = gmv = 0
    start_wall = time.time()
    started = time.monotonic()
    deadline = started + seconds
    pipe = r.pipeline(transaction=False)
    queued = 0
    for batch in plan.batches():
        cols = {k: v.tolist() for k, v in batch.columns.items()}
        for i in range(batch.n):
            fields = {k: cols[k][i] for k in ("at", "amt", "cat", "cty", "reg", "brd")}
            if pipeline == 1:
                r.xadd(stream, fields)
            else:
                pipe.xadd(stream, fields)
                queued += 1
                if queued >= pipeline:
                    pipe.execute()
                    queued = 0
            orders += 1
            gmv += cols["amt"][i]
            if orders % 256 == 0 and time.monotonic() >= deadline:
                break
        if time.monotonic() >= deadline:
            break
    if queued:
        pipe.execute()
    elapsed = time.monotonic() - started
    r.xadd(stream, {"end": orders})
    return {
        "orders": orders,
        "gmv_fen": gmv,
        "seconds": round(elapsed, 3),
        "start_wall": start_wall,
    }


def consume(r: "redis.Redis", stream: str, totals: str, pipeline: int) -> dict[str, int | float]:
    try:
        r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    orders = 0
    pipe = r.pipeline(transaction=False)
    queued = 0
    while True:
        reply = r.xreadgroup(GROUP, "c1", {stream: ">"}, count=100, block=BLOCK)
        for entry_id, fields in reply[0][1] if reply else []:
            if b"end" in fields:
                if queued:
                    pipe.execute()
                gmv = int(r.hget(totals, "gmv_fen") or 0)
                return {"orders": orders, "gmv_fen": gmv, "end_wall": time.time()}
            if pipeline == 1:
                r.hincrby(totals, "gmv_fen", int(fields[b"amt"]))
                r.xack(stream, GROUP, entry_id)
            else:
                pipe.hincrby(totals, "gmv_fen", int(fields[b"amt"]))
                pipe.xack(stream, GROUP, entry_id)
                queued += 2
                if queued >= pipeline:
                    pipe.execute()
                    queued = 0
            orders += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ticker.bench.naive")
    p.add_argument("role", choices=["produce", "consume"])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--pipeline", type=int, default=1)
    args = p.parse_args(argv)
    r = redis.Redis.from_url(args.redis_url)
    stream, totals = f"naive:{args.namespace}:orders", f"naive:{args.namespace}:totals"
    if args.role == "produce":
        result: dict[str, int | float] = produce(r, stream, args.seconds, args.pipeline)
    else:
        result = consume(r, stream, totals, args.pipeline)
    print(json.dumps(result), flush=True)
    r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
