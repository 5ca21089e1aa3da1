"""Live runs under faults, with real processes: Redis killed and restarted from its AOF
under a writing producer, the HTTP ingestion process killed mid-request, and a late order
whose correction reaches the feed."""

import asyncio
import signal
import subprocess
import sys
import threading

import aiohttp
import orjson

from tests.conftest import UNIT, stop
from tests.faults.conftest import Procs, RedisServer, load_state, wait_for
from tests.live.test_live_run import _order
from ticker.core import timeline
from ticker.keys import Keys
from ticker.producer import Producer
from ticker.redis_io import free_port


def _open(procs: Procs) -> None:
    code, out = procs.run("live", "start", "--title", "Faults", "--day", "2026-11-27")
    assert code == 0, out


def _ended(aof_redis: RedisServer, procs: Procs) -> "object":
    assert procs.run("live", "end")[0] == 0
    wait_for(lambda: (s := load_state(aof_redis, procs.namespace)) and s.ended, 60, "the end")
    state = load_state(aof_redis, procs.namespace)
    assert state is not None
    return state


def test_redis_killed_and_restarted_under_a_producer_counts_every_order_once(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """kill -9 of Redis mid-stream, restarted from its AOF: the producer's retries and the
    aggregator's restart give exactly the 6,000 orders written."""
    _open(procs)
    procs.start("aggregate", "--name", "agg")

    async def write() -> None:
        async with Producer(aof_redis.url, procs.namespace, "p", batch_size=100) as p:
            for i in range(6_000):
                await p.add(_order(i, 300))
                if i == 3_000:
                    threading.Thread(target=aof_redis.restart).start()

    asyncio.run(write())
    state = _ended(aof_redis, procs)
    assert (state.orders, state.gmv_fen) == (6_000, 1_800_000)  # type: ignore[attr-defined]


SERVE = """
import sys
from aiohttp import web
from ticker import ingest_http
from ticker.keys import Keys
app = web.Application()
ingest_http.setup(app, sys.argv[1], Keys(sys.argv[2]), "tok")
web.run_app(app, host="127.0.0.1", port=int(sys.argv[3]), print=None)
"""


async def _post_all(url: str, body: bytes) -> int:
    for _ in range(int(200 * UNIT)):
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.post(url, data=body, headers={"Authorization": "Bearer tok"}) as r,
            ):
                return r.status
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise AssertionError("the ingestion server never answered")


def test_the_http_process_killed_mid_requests_then_resent_counts_each_order_once(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """Requests in flight when the process is killed -9, all sent again to a new one:
    exactly the 20,000 orders, however many were taken before the kill."""
    _open(procs)
    procs.start("aggregate", "--name", "agg")
    port = free_port()
    argv = [sys.executable, "-c", SERVE, aof_redis.url, procs.namespace, str(port)]
    url = f"http://127.0.0.1:{port}/api/orders"
    bodies = [
        b"\n".join(orjson.dumps(_order(i)) for i in range(lo, lo + 2_000))
        for lo in range(0, 20_000, 2_000)
    ]
    server = subprocess.Popen(argv)
    try:

        async def first_round() -> None:
            tasks = [asyncio.ensure_future(_post_all(url, b)) for b in bodies]
            await asyncio.sleep(0.3 * UNIT)
            server.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(asyncio.wait_for(first_round(), 5 * UNIT))
    except TimeoutError:
        pass  # requests to the dead process are abandoned, as a client would
    finally:
        stop(server)
    server = subprocess.Popen(argv)
    try:

        async def again() -> list[int]:
            return list(await asyncio.gather(*(_post_all(url, b) for b in bodies)))

        assert asyncio.run(again()) == [202] * 10
    finally:
        stop(server)
    state = _ended(aof_redis, procs)
    assert (state.orders, state.duplicates) == (20_000, 0)  # type: ignore[attr-defined]


def test_a_late_order_reaches_the_feed_and_the_curve_key_agrees(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """An order paid at 10:01 arriving after 11:00: the feed's tail starts at 10:02, and a
    curve folded from tails equals the stored curve."""
    _open(procs)
    procs.start("aggregate", "--name", "agg")
    keys = Keys(procs.namespace)

    async def write(orders: list[dict[str, object]], producer: str) -> None:
        async with Producer(aof_redis.url, procs.namespace, producer) as p:
            await p.add_many(orders)  # type: ignore[arg-type]

    asyncio.run(write([_order(i * 60) for i in range(61)], "early"))
    wait_for(lambda: (s := load_state(aof_redis, procs.namespace)) and s.orders == 61, 30, "61")
    with aof_redis.client() as r:
        held = orjson.loads(r.get(keys.curve) or b"[]")
        last = r.xrevrange(keys.feed, count=1)[0][0]
    asyncio.run(write([{**_order(60), "id": "late"}], "late"))
    wait_for(lambda: (s := load_state(aof_redis, procs.namespace)) and s.orders == 62, 30, "62")
    with aof_redis.client() as r:
        entries = r.xrange(keys.feed, min=f"({last.decode()}")
        stored = orjson.loads(r.get(keys.curve) or b"[]")
    for _, fields in entries:
        tail = orjson.loads(fields[b"u"])["curve"]
        held, joined = timeline.merge_tail(held, tail, 0)
        assert joined
    assert held == stored
    assert orjson.loads(entries[0][1][b"u"])["curve"][0][0] == 10 * 3_600_000 + 120_000
