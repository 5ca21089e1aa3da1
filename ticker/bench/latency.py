"""Latency: from the moment a batch is written to the moment a websocket client has it.

Method. The real aggregator (`ticker aggregate`) and server (`ticker serve`) run as
processes; the replay runs at 1x from 00:00 (the midnight peak) as `ticker replay` would,
but records the id Redis gave every orders entry (`ticker.bench.traced_replay`): the id's
milliseconds are the Redis server's clock at the XADD, the batch's **write time**, and the
trace also holds the cumulative order count the batch brings the run to. The benchmark
holds N websocket clients on /ws and stamps every message on receipt (time.time(), the same
machine clock Redis stamps ids with). Afterwards it reads the feed stream: each feed
entry's id milliseconds are the commit time (**feed entry**) and its `u` holds the order
count after that commit. A batch is *in* a state once the state's order count reaches the
batch's cumulative count (batches are applied in order), so for each batch and client:
write -> client = receipt of the first message whose position's state includes the batch,
minus the write time; feed -> client = the same receipt minus the id time of the first feed
entry that includes the batch; write -> feed is the aggregator's share.
"""

import asyncio
import json
import os
import resource
import tempfile
import time
from fractions import Fraction
from typing import Any

import numpy as np
import orjson

from ticker.bench.common import (
    Proc,
    Sampler,
    drop_namespace,
    expected_totals,
    fresh_namespace,
    read_state,
    sync_redis,
    ticker_args,
)
from ticker.bench.pipeline import BenchFailed, _wait_for_group, wait_http
from ticker.keys import Keys
from ticker.redis_io import free_port


def _id_ms(entry_id: str | bytes) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _serve_has(option: str) -> bool:
    """Whether `ticker serve` takes an option (its connection limits are recent)."""
    import argparse

    from ticker.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return option in action.choices["serve"].format_help()
    return False


def _position(text: str) -> str | None:
    """The `position` of a message, found without parsing the whole state."""
    i = text.find('"position":"')
    if i < 0:
        return None
    j = text.find('"', i + 12)
    return text[i + 12 : j]


async def _client(url: str, log: list[tuple[float, str]], stop: asyncio.Event) -> None:
    import websockets

    async with websockets.connect(url, max_size=2**24, open_timeout=60) as ws:
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time() * 1000
            pos = _position(text if isinstance(text, str) else text.decode())
            if pos is not None:
                log.append((now, pos))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a.max()), 1),
        "n": len(values),
    }


def run_latency(
    url: str, duration_s: float, clients: int, batch_size: int = 4000, seed: int = 0
) -> dict[str, Any]:
    to_ms = int(duration_s * 1000)
    gmv_expected, orders_expected, window_orders = expected_totals(
        Fraction(1), 0, to_ms, seed, batch_size
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < clients * 2 + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, clients * 2 + 256), hard))
    ns = fresh_namespace(f"lat{clients}")
    port = free_port()
    agg = Proc.start("aggregator", ticker_args(url, ns, "aggregate", "--burst", "--name", "bench"))
    serve = ["serve", "--port", str(port)]
    if _serve_has("--max-connects-per-ip"):  # all the clients connect from 127.0.0.1
        serve += ["--max-connects-per-ip", "1000000", "--max-clients", str(clients + 100)]
    server = Proc.start("server", ticker_args(url, ns, *serve))
    replay: Proc | None = None
    trace_file = tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False)  # noqa: SIM115
    trace_file.close()
    sampler = Sampler(url)
    sampler.watch("aggregator", agg.popen.pid)
    sampler.watch("server", server.popen.pid)
    logs: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
    try:
        _wait_for_group(url, ns, agg)
        wait_http(f"http://127.0.0.1:{port}/healthz", server)

        async def go() -> Proc:
            stop = asyncio.Event()
            ws_url = f"ws://127.0.0.1:{port}/ws"
            tasks = []
            for log in logs:
                tasks.append(asyncio.create_task(_client(ws_url, log, stop)))
                await asyncio.sleep(0.002)
            # every client has its snapshot before the replay starts
            deadline = time.monotonic() + 60 + clients * 0.05
            while any(not log for log in logs) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                for t in tasks:
                    if t.done() and t.exception():
                        raise BenchFailed(f"websocket client failed: {t.exception()!r}")
            rep = Proc.start(
                "replay",
                [
                    *ticker_args(url, ns)[:2],
                    "ticker.bench.traced_replay",
                    "--redis-url",
                    url,
                    "--namespace",
                    ns,
                    "--speed",
                    "1",
                    "--to-ms",
                    str(to_ms),
                    "--batch-size",
                    str(batch_size),
                    "--seed",
                    str(seed),
                    "--trace",
                    trace_file.name,
                ],
            )
            sampler.watch("replay", rep.popen.pid)
            loop = asyncio.get_running_loop()
            code = await loop.run_in_executor(None, rep.wait, duration_s * 10 + 120)
            if code != 0:
                raise BenchFailed(f"traced replay failed:\n{rep.output()}")
            code = await loop.run_in_executor(None, agg.wait, 120)
            if code != 0:
                raise BenchFailed(f"aggregator failed:\n{agg.output()}")
            await asyncio.sleep(0.6)  # the last tick (10 per second) reaches the clients
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return rep

        with sampler:
            replay = asyncio.run(go())
        with open(trace_file.name) as f:
            trace = json.load(f)
        r = sync_redis(url)
        try:
            feed = r.xrange(Keys(ns).feed, "-", "+")
        finally:
            r.close()
        state = read_state(url, ns)
    finally:
        for p in (agg, server, replay):
            if p is not None:
                p.stop()
        os.unlink(trace_file.name)
        drop_namespace(url, ns)

    feed_ms = [_id_ms(i) for i, _ in feed]
    feed_orders = [int(orjson.loads(fields[b"u"])["orders"]) for _, fields in feed]
    orders_at = {i.decode(): n for (i, _), n in zip(feed, feed_orders, strict=True)}
    batches = trace["batches"]
    start_ms = trace["started_wall"] * 1000
    writes = np.array([_id_ms(i) for i, _, _ in batches], dtype=np.float64)
    cums = np.array([c for _, c, _ in batches], dtype=np.int64)
    dues = np.array([start_ms + (t1 - trace["from_ms"]) / trace["speed"] for *_, t1 in batches])
    k = np.searchsorted(np.asarray(feed_orders, dtype=np.int64), cums, side="left")
    missing = int((k >= len(feed_orders)).sum())
    seen = k < len(feed_orders)
    first_feed = np.asarray(feed_ms, dtype=np.float64)[k[seen]]
    w2f = (first_feed - writes[seen]).tolist()
    due2w = (writes - dues).tolist()
    w2c: list[float] = []
    f2c: list[float] = []
    for log in logs:
        if not log:
            continue
        recv = np.array([t for t, _ in log])
        has = np.maximum.accumulate(np.array([orders_at.get(p, -1) for _, p in log]))
        j = np.searchsorted(has, cums[seen], side="left")
        ok = j < len(has)
        got = recv[j[ok]]
        w2c += (got - writes[seen][ok]).tolist()
        f2c += (got - first_feed[ok]).tolist()
    exact = bool(
        state
        and state.gmv_fen == gmv_expected
        and state.orders == orders_expected
        and state.ended
        and missing == 0
    )
    return {
        "command": f"ticker aggregate & ticker serve & (traced) ticker replay --speed 1 "
        f"--from 00:00 --to {to_ms // 1000}s --batch-size {batch_size}; {clients} ws client(s)",
        "method": "write = orders entry id ms (Redis clock at XADD); feed = id ms of the first "
        "feed entry whose state includes the batch; client = time.time() at receipt of the "
        "first /ws message whose position's state includes it (same machine clock)",
        "window_s": duration_s,
        "clients": clients,
        "orders": window_orders,
        "batches": len(batches),
        "feed_entries": len(feed),
        "messages_received": sum(len(log) for log in logs),
        "write_to_client_ms": _percentiles(w2c),
        "feed_to_client_ms": _percentiles(f2c),
        "write_to_feed_ms": _percentiles(w2f),
        "replay_due_to_write_ms": _percentiles(due2w),
        # the writer found the next batches not generated yet: how often, how long in all
        "replay_generator_waits": len(trace.get("generator_waits_s", [])),
        "replay_generator_wait_ms": round(sum(trace.get("generator_waits_s", [])) * 1000, 1),
        "exact": exact,
        **sampler.report(),
    }
