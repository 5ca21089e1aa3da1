"""Ingestion benchmark: real orders into a live run, end to end, exact.

Two ways in, each into its own live run (`ticker live start`) with a real `ticker
aggregate --burst` applying it:

- `producer`: `ticker.producer.Producer.add_columns` in this process (columns of Unix ms,
  fen and names, as a shop's export loaded with numpy would be), batches of
  `batch_size`, each written by the producer's exactly-once script;
- `http`: NDJSON bodies POSTed to a real `ticker serve --ingest-token` by `concurrency`
  connections at once (each request's 202 means its orders are in the stream).

The clock runs from the first write to the moment the aggregator's committed state holds
every order (read every 20 ms); the orders are made before it starts. Exact: after the
run's end entry is applied, the state's orders, GMV, per-category GMV and each producer's
last seq equal what was written, with no duplicate and no dead letter.
"""

import asyncio
import time
from typing import Any

import numpy as np
import orjson

from ticker.bench.common import (
    Proc,
    drop_namespace,
    fresh_namespace,
    proc_cpu_s,
    read_state,
    ticker_args,
)
from ticker.bench.pipeline import BenchFailed, _wait_for_group, wait_http
from ticker.core.clock import DAY_MS
from ticker.core.orders import COLUMN_OF
from ticker.redis_io import free_port

DAY = "2026-11-27"
ORIGIN_MS = 1_795_737_600_000  # 2026-11-27T00:00:00Z (the event's day at +00:00)
CATEGORIES = [f"Category {i}" for i in range(40)]
REGIONS = [f"Region {i}" for i in range(300)]
TOKEN = "bench-ingest"


def orders(n: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """`n` orders as columns: paid-at (Unix ms) over the day, fen, category and region."""
    rng = np.random.default_rng(seed)
    return {
        "paid_at": ORIGIN_MS + np.sort(rng.integers(0, DAY_MS, n)),
        "amount": rng.integers(100, 200_000, n),
        "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)],
        "buyer_region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n)],
    }


def _open(url: str, label: str) -> tuple[str, Proc]:
    """A fresh namespace with a live run open and an aggregator (burst) waiting on it."""
    ns = fresh_namespace(label)
    start = Proc.start(
        "live start", ticker_args(url, ns, "live", "start", "--title", label, "--day", DAY)
    )
    if start.wait(60) != 0:
        raise BenchFailed(f"live start failed:\n{start.output()}")
    start.stop()
    agg = Proc.start("aggregator", ticker_args(url, ns, "aggregate", "--burst", "--name", label))
    _wait_for_group(url, ns, agg)
    return ns, agg


def _applied(url: str, ns: str, n: int, agg: Proc, timeout: float) -> float:
    """When the committed state first holds `n` orders (monotonic clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(url, ns)
        if state is not None and state.orders >= n:
            return time.monotonic()
        if agg.popen.poll() is not None:
            raise BenchFailed(f"aggregator exited early:\n{agg.output()}")
        time.sleep(0.02)
    raise BenchFailed(f"the aggregator did not apply {n:,} orders in {timeout:.0f}s")


def _close(url: str, ns: str, agg: Proc, timeout: float) -> None:
    """End the live run and let the burst aggregator apply the end and exit."""
    end = Proc.start("live end", ticker_args(url, ns, "live", "end"))
    code = end.wait(60)
    end.stop()
    if code != 0:
        raise BenchFailed(f"live end failed:\n{end.output()}")
    if agg.wait(timeout) != 0:
        raise BenchFailed(f"aggregator failed:\n{agg.output()}")


def _check(url: str, ns: str, cols: dict[str, Any], producers: dict[str, int]) -> dict[str, Any]:
    """The committed state against what was written."""
    state = read_state(url, ns)
    if state is None or state.meta is None:
        return {"exact": False, "why": "no state"}
    gmv = int(cols["amount"].sum())
    names, index = np.unique(cols["category"], return_inverse=True)
    by_cat = np.bincount(index, weights=None, minlength=len(names))
    cat_gmv = np.zeros(len(names), dtype=np.int64)
    np.add.at(cat_gmv, index, cols["amount"])
    live = dict(zip(state.meta.categories, state.cat_gmv.tolist(), strict=False))
    written = dict(zip(names.tolist(), cat_gmv.tolist(), strict=True))
    checks = {
        "orders": state.orders == len(cols["amount"]),
        "gmv": state.gmv_fen == gmv,
        "categories": {k: v for k, v in live.items() if v} == written,
        "category_orders": int(state.cat_orders.sum()) == int(by_cat.sum()),
        "producers": state.producers == producers,
        "ended": state.ended,
        "no duplicates or dead letters": state.duplicates == 0 and state.dead_letters == 0,
    }
    return {
        "orders_total": state.orders,
        "gmv_fen": state.gmv_fen,
        "gmv_fen_expected": gmv,
        "duplicates": state.duplicates,
        "dead_letters": state.dead_letters,
        "failed_checks": [k for k, ok in checks.items() if not ok],
        "exact": all(checks.values()),
    }


def run_producer(
    url: str, n: int = 4_000_000, batch_size: int = 16_000, seed: int = 0, timeout: float = 600
) -> dict[str, Any]:
    """`n` orders through `Producer.add_columns` into a live run, applied and checked."""
    from ticker.producer import Producer

    cols = orders(n, seed)
    ns, agg = _open(url, "ingest-producer")
    try:

        async def write() -> tuple[float, int]:
            async with Producer(url, ns, "bench", batch_size=batch_size) as p:
                started = time.monotonic()
                await p.add_columns(
                    cols["paid_at"],
                    cols["amount"],
                    category=cols["category"],
                    buyer_region=cols["buyer_region"],
                )
                return started, p.seq

        cpu0, agg_cpu0 = time.process_time(), proc_cpu_s(agg.popen.pid) or 0.0
        started, batches = asyncio.run(write())
        written = time.monotonic()
        producer_cpu = time.process_time() - cpu0
        done = _applied(url, ns, n, agg, timeout)
        agg_cpu = (proc_cpu_s(agg.popen.pid) or 0.0) - agg_cpu0
        _close(url, ns, agg, timeout)
        check = _check(url, ns, cols, {"bench": batches})
    finally:
        agg.stop()
        drop_namespace(url, ns)
    return {
        "command": f"Producer.add_columns({n:,} orders, batch_size={batch_size:,}) "
        "& ticker aggregate --burst",
        "orders": n,
        "batch_size": batch_size,
        "batches": batches,
        "write_s": round(written - started, 3),
        "wall_s": round(done - started, 3),
        "write_orders_per_s": round(n / max(written - started, 1e-9)),
        "orders_per_s": round(n / max(done - started, 1e-9)),
        # CPU seconds each side spent (wall figures swing with the machine's load).
        "producer_cpu_s": round(producer_cpu, 3),
        "aggregator_cpu_s": round(agg_cpu, 3),
        **check,
    }


def ndjson_bodies(cols: dict[str, Any], per_request: int) -> list[bytes]:
    """The orders as NDJSON request bodies of `per_request` lines (ids o0, o1, ...)."""
    keys = [k for k in ("category", "seller_country", "buyer_region", "brand") if k in cols]
    assert set(keys) <= set(COLUMN_OF)
    lines = [
        orjson.dumps(
            {
                "id": f"o{i}",
                "paid_at": int(at),
                "amount": int(amt),
                **{k: str(cols[k][i]) for k in keys},
            }
        )
        for i, (at, amt) in enumerate(zip(cols["paid_at"], cols["amount"], strict=True))
    ]
    return [b"\n".join(lines[i : i + per_request]) for i in range(0, len(lines), per_request)]


def run_http(
    url: str,
    n: int = 500_000,
    per_request: int = 5_000,
    concurrency: int = 4,
    seed: int = 0,
    timeout: float = 600,
) -> dict[str, Any]:
    """`n` orders POSTed as NDJSON to a real server, applied and checked."""
    import aiohttp

    cols = orders(n, seed)
    bodies = ndjson_bodies(cols, per_request)
    ns, agg = _open(url, "ingest-http")
    port = free_port()
    server = Proc.start(
        "server", ticker_args(url, ns, "serve", "--port", str(port), "--ingest-token", TOKEN)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", server)

        async def post_all() -> tuple[float, int]:
            queue = list(reversed(bodies))
            accepted = 0
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}

            async def worker(session: aiohttp.ClientSession) -> None:
                nonlocal accepted
                while queue:
                    body = queue.pop()
                    async with session.post(base + "/api/orders", data=body) as r:
                        reply = await r.json()
                        if r.status != 202:
                            raise BenchFailed(f"POST /api/orders: {r.status} {reply}")
                        accepted += reply["accepted"]

            async with aiohttp.ClientSession(headers=headers) as session:
                started = time.monotonic()
                await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            return started, accepted

        cpu0 = {p.name: proc_cpu_s(p.popen.pid) or 0.0 for p in (server, agg)}
        started, accepted = asyncio.run(post_all())
        posted = time.monotonic()
        done = _applied(url, ns, n, agg, timeout)
        cpu = {p.name: (proc_cpu_s(p.popen.pid) or 0.0) - cpu0[p.name] for p in (server, agg)}
        _close(url, ns, agg, timeout)
        check = _check(url, ns, cols, {"http": len(bodies)})
    finally:
        server.stop()
        agg.stop()
        drop_namespace(url, ns)
    check["exact"] = check["exact"] and accepted == n
    return {
        "command": f"ticker serve --ingest-token … & ticker aggregate --burst; {len(bodies):,} "
        f"POST /api/orders of {per_request:,} NDJSON orders, {concurrency} at a time",
        "orders": n,
        "requests": len(bodies),
        "accepted": accepted,
        "post_s": round(posted - started, 3),
        "wall_s": round(done - started, 3),
        "post_orders_per_s": round(n / max(posted - started, 1e-9)),
        "orders_per_s": round(n / max(done - started, 1e-9)),
        "server_cpu_s": round(cpu["server"], 3),
        "aggregator_cpu_s": round(cpu["aggregator"], 3),
        **check,
    }
