"""Throughput against the number of shards, on a local Redis Cluster and on one Redis.

For each shard count N: a fresh namespace, one `ticker aggregate --shards N --burst`
process per shard (at most `max_aggregators`), and `ticker replay --shards N --speed max`
over the same window of the real day; timed from the replay's launch until every
aggregator has exited (the merged state says the replay ended), then checked exact.

    python -m ticker.bench.shards --shards 1,2,4 --to 00:00:20

On a 2-core machine every process shares the same two cores, so this measures the cost
of sharding (more processes, a merge step) more than its gain; the README turns the
per-process figures into a capacity model for a real cluster.
"""

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import redis
from redis.cluster import RedisCluster

from ticker.bench.common import (
    Proc,
    expected_totals,
    fresh_namespace,
    load_average,
    machine,
    proc_cpu_s,
    ticker_args,
)
from ticker.core.aggregate import State
from ticker.core.clock import format_time_of_day, parse_time_of_day
from ticker.keys import Keys
from ticker.redis_io import embedded_redis
from ticker.testing import local_cluster


@contextlib.contextmanager
def _engine(kind: str) -> Iterator[tuple[str, Any, list[int]]]:
    """(URL, a sync client, server pids) of a private single Redis or a 3+3 local cluster."""
    if kind == "single":
        with embedded_redis() as url:
            r = redis.Redis.from_url(url)
            yield url, r, [int(r.info("server")["process_id"])]
            r.close()
    else:
        with local_cluster(masters=3, replicas=1) as cluster:
            port = int(cluster.url.rsplit(":", 1)[1].split("/")[0])
            r = RedisCluster(host="127.0.0.1", port=port)
            yield cluster.url, r, [n.process.pid for n in cluster.nodes]
            r.close()


@dataclass
class _Pid:
    name: str
    pid: int


def run_one(
    url: str, r: Any, shards: int, to_ms: int, aggregators: int, redis_pids: list[int]
) -> dict[str, Any]:
    ns = fresh_namespace(f"s{shards}")
    redis_procs = [_Pid(f"redis{i}", pid) for i, pid in enumerate(redis_pids)]
    base = {p.name: proc_cpu_s(p.pid) or 0.0 for p in redis_procs}
    gmv, orders, window_orders = expected_totals(Fraction(1), 0, to_ms, 0, 4000)
    shard_args = ("--shards", str(shards))
    aggs = [
        Proc.start(
            f"agg{i}", ticker_args(url, ns, "aggregate", *shard_args, "--burst", "--name", f"a{i}")
        )
        for i in range(aggregators)
    ]
    time.sleep(1.0)  # let them take their shares before the clock starts
    to = format_time_of_day(to_ms, millis=False)
    replay = Proc.start(
        "replay",
        ticker_args(url, ns, "replay", *shard_args, "--speed", "max", "--to", to, "--quiet"),
    )
    cpu: dict[str, float] = {}
    watched = [*redis_procs, *(_Pid(p.name, p.popen.pid) for p in (replay, *aggs))]
    try:
        while any(p.popen.poll() is None for p in (replay, *aggs)):
            for w in watched:
                used = proc_cpu_s(w.pid)
                if used is not None:
                    cpu[w.name] = used
            time.sleep(0.1)
        if replay.wait(3600) != 0:
            raise RuntimeError(f"replay failed:\n{replay.output()}")
        for agg in aggs:
            if agg.wait(3600) != 0:
                raise RuntimeError(f"aggregator failed:\n{agg.output()}")
        wall = max(a.ended or 0.0 for a in aggs) - replay.started
        raw, brands = r.hmget(Keys(ns).state, ["state", "brands"])
        state = State.loads(raw, brands)
    finally:
        for p in (replay, *aggs):
            p.stop()
    return {
        "shards": shards,
        "aggregator_processes": aggregators,
        "orders": window_orders,
        "wall_s": round(wall, 2),
        "orders_per_s": round(window_orders / wall),
        "exact": state.ended and (state.gmv_fen, state.orders) == (gmv, orders),
        "milestones": [f.milestone.id for f in state.fired],
        # CPU seconds per million orders (sampled every 0.1 s, so a little under)
        "cpu_s_per_m_orders": {
            "replay": round(cpu.get("replay", 0) / window_orders * 1e6, 2),
            "aggregators": round(
                sum(v for k, v in cpu.items() if k.startswith("agg")) / window_orders * 1e6, 2
            ),
            "redis": round(
                sum(v - base.get(k, 0) for k, v in cpu.items() if k.startswith("redis"))
                / window_orders
                * 1e6,
                2,
            ),
        },
        "load_average": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ticker.bench.shards", description=__doc__)
    p.add_argument("--shards", default="1,2,4", help="shard counts (default 1,2,4)")
    p.add_argument("--to", default="00:00:20", help="end of the window from 00:00 (full scale)")
    p.add_argument("--engines", default="cluster,single", help="cluster, single or both")
    p.add_argument("--max-aggregators", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    to_ms = parse_time_of_day(args.to)
    out: dict[str, Any] = {"machine": machine(), "load_average_before": load_average(), "runs": []}
    for engine in args.engines.split(","):
        with _engine(engine) as (url, r, pids):
            for n in (int(x) for x in args.shards.split(",")):
                aggs = min(n, args.max_aggregators)
                row = {"engine": engine, **run_one(url, r, n, to_ms, aggs, pids)}
                out["runs"].append(row)
                if not args.json:
                    print(
                        f"{engine:8} shards {n}  aggregators {row['aggregator_processes']}  "
                        f"{row['orders']:,} orders in {row['wall_s']} s = "
                        f"{row['orders_per_s']:,} orders/s  exact {row['exact']}  "
                        f"CPU s per M orders {row['cpu_s_per_m_orders']}  "
                        f"load {row['load_average']}",
                        flush=True,
                    )
    if args.json:
        print(json.dumps(out))
    return 0 if all(r["exact"] for r in out["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
