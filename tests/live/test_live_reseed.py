"""A live run through a Redis that restarts empty (no persistence): the aggregator puts the
run's keys back with its state, and producers and HTTP orders go on counting exactly."""

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import UNIT, Server, wait_http
from tests.faults.conftest import Procs, load_state, wait_for
from tests.faults.test_restart import VolatileRedis
from tests.live.test_live_run import _order
from ticker.core.batch import ReplayMeta
from ticker.keys import Keys
from ticker.producer import Producer
from ticker.redis_io import free_port

TOKEN = "reseed-ingest"


@pytest.fixture
def live(volatile: VolatileRedis, vprocs: Procs) -> Iterator[Server]:
    """An open live run, its aggregator, and a server taking orders over HTTP."""
    code, out = vprocs.run("live", "start", "--title", "Reseed", "--day", "2026-11-27")
    assert code == 0, out
    vprocs.start("aggregate", "--name", "agg")
    port = free_port()
    proc = vprocs.start("serve", "--port", str(port), "--ingest-token", TOKEN)
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
    return Server(f"http://127.0.0.1:{port}/", proc)  # type: ignore[arg-type]


async def _post(server: Server, ids: range) -> tuple[int, Any]:
    """POST the orders, sent again on 503 (Redis unreachable) as the docs tell a client."""
    body = b"\n".join(orjson.dumps({**_order(i, 500), "id": f"h{i}"}) for i in ids)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s:
        for _ in range(int(100 * UNIT)):
            async with s.post(server.url + "api/orders", data=body, headers=headers) as r:
                if r.status != 503:
                    return r.status, await r.json()
            await asyncio.sleep(0.1)
    return 503, None


def _applied(volatile: VolatileRedis, orders: int) -> None:
    wait_for(lambda: (s := load_state(volatile, "vol")) and s.orders == orders, 60, f"{orders}")


def _restart_empty(volatile: VolatileRedis) -> None:
    """kill -9 of Redis, back empty; wait until the aggregator restored its state."""
    volatile.restart(signal.SIGKILL)
    wait_for(lambda: load_state(volatile, "vol") is not None, 30, "the state restored")


def test_an_empty_restart_gives_the_live_run_and_producer_seqs_back(
    volatile: VolatileRedis, live: Server
) -> None:
    """After the restart the live hash names the same run, and each producer's last seq is
    the one the state applied (the HTTP producer's too)."""
    asyncio.run(_write(volatile, range(300), "till"))
    assert asyncio.run(_post(live, range(50)))[0] == 202
    _applied(volatile, 350)
    with volatile.client() as r:
        before = r.hgetall(Keys("vol").live)
    _restart_empty(volatile)
    with volatile.client() as r:
        after = r.hgetall(Keys("vol").live)
        assert r.hgetall(Keys("vol").producers) == {b"till": b"3", b"http": b"1"}
    assert (after[b"run"], after[b"ended"]) == (before[b"run"], b"0")
    # The meta as the state has it: the names that came since the start are in its lists.
    was, now = ReplayMeta.from_json(before[b"meta"]), ReplayMeta.from_json(after[b"meta"])
    assert (now.title, now.origin_ms, now.countries[0]) == (was.title, was.origin_ms, "Home")


async def _write(volatile: VolatileRedis, ids: range, producer: str) -> None:
    async with Producer(volatile.url, "vol", producer, batch_size=100) as p:
        await p.add_many([_order(i, 300) for i in ids])


def test_orders_after_an_empty_restart_count_once_from_every_way_in(
    volatile: VolatileRedis, live: Server
) -> None:
    """A producer open across the restart and new HTTP requests after it are all counted,
    none taken for a repeat of the batches numbered before it."""

    async def across() -> None:
        async with Producer(volatile.url, "vol", "till", batch_size=100) as p:
            await p.add_many([_order(i, 300) for i in range(200)])
            _applied(volatile, 240)
            await asyncio.to_thread(_restart_empty, volatile)
            await p.add_many([_order(i, 300) for i in range(200, 400)])  # waits for the reseed

    assert asyncio.run(_post(live, range(40)))[0] == 202
    _applied(volatile, 40)
    asyncio.run(across())
    assert asyncio.run(_post(live, range(1_000, 1_030)))[0] == 202
    _applied(volatile, 470)
    state = load_state(volatile, "vol")
    assert state is not None and state.duplicates == 0 and state.gmv_fen == 400 * 300 + 70 * 500
    assert state.producers == {"till": 4, "http": 2}
