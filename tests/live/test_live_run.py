"""A live run on a real Redis with a real aggregator: producers writing concurrently, with
retries and duplicates, a producer that skips a seq, kill -9 of the aggregator."""

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from tests.conftest import UNIT, Ticker, stop
from ticker.core.aggregate import State
from ticker.keys import Keys
from ticker.producer import NoLiveRun, OrderError, Producer

DAY = "2026-11-27"


def _order(i: int, cents: int = 1_000, **names: str) -> dict[str, Any]:
    minute, second = divmod(i % 3_600, 60)
    return {
        "id": f"o{i}",
        "paid_at": f"{DAY}T10:{minute:02d}:{second:02d}Z",
        "amount": cents,
        **names,
    }


def _live(ticker: Ticker, *extra: str) -> None:
    done = ticker.run("live", "start", "--title", "Test sale", "--day", DAY, *extra)
    assert done.returncode == 0, done.stderr


def _state(ticker: Ticker) -> State:
    with redis.Redis.from_url(ticker.redis_url) as r:
        raw, brands = r.hmget(Keys(ticker.namespace).state, ["state", "brands"])
    return State.loads(raw, brands) if raw else State()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finish(ticker: Ticker, agg: "subprocess.Popen[str]") -> State:
    assert ticker.run("live", "end").returncode == 0
    assert agg.wait(60 * UNIT) == 0, ticker.output(agg)
    return _state(ticker)


async def _write(ticker: Ticker, producer: str, ids: range, lose_every: int) -> None:
    """Write orders; the reply of every `lose_every`-th write is lost after Redis took it."""
    async with Producer(ticker.redis_url, ticker.namespace, producer, batch_size=50) as p:
        real, calls = p._write, 0

        async def lossy(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            await real(**kwargs)
            if calls % lose_every == 0:
                raise redis.exceptions.ConnectionError("reply lost")

        p._write = lossy
        for i in ids:
            await p.add(_order(i))


def test_two_producers_with_retries_count_every_order_exactly_once(ticker: Ticker) -> None:
    """Two producers at once, each resending some batches: 3,000 orders, RMB 30,000."""
    _live(ticker)
    agg = ticker.start("aggregate", "--burst")
    try:

        async def both() -> None:
            await asyncio.gather(
                _write(ticker, "shop-a", range(0, 1_500), lose_every=3),
                _write(ticker, "shop-b", range(1_500, 3_000), lose_every=5),
            )

        asyncio.run(both())
        state = _finish(ticker, agg)
    finally:
        stop(agg)
    assert (state.orders, state.gmv_fen, state.dead_letters) == (3_000, 3_000_000, 0)
    assert state.producers == {"shop-a": 30, "shop-b": 30}


def test_a_producer_that_skips_a_seq_is_held_then_dead_lettered_with_the_reason(
    ticker: Ticker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch written with seq 3 after seq 1: held, then a dead letter naming the gap."""
    monkeypatch.setenv("TICKER_HOLD_SECONDS", "1")
    _live(ticker)
    agg = ticker.start("aggregate", "--burst")
    try:

        async def skipping() -> None:
            async with Producer(ticker.redis_url, ticker.namespace, "gappy", batch_size=1) as p:
                await p.add(_order(1))
                await p.flush()
                stray = p._new_batch()
                stray.add(p.parse(_order(2)))
                await p.redis.xadd(p.keys.orders, stray.fields(p.run, "gappy", 3))

        asyncio.run(skipping())
        wait_for(lambda: _state(ticker).gaps == 1, "the stray given up")
        state = _finish(ticker, agg)
    finally:
        stop(agg)
    assert (state.orders, state.gaps, state.producer_gaps) == (1, 1, {"gappy": 1})
    with redis.Redis.from_url(ticker.redis_url) as r:
        ((_, dead),) = r.xrange(Keys(ticker.namespace).dead_letters)
    assert dead[b"reason"].startswith(b"producer 'gappy': seq 2 expected, got 3")
    status = orjson.loads(ticker.run("live", "status").stdout)
    assert status["producers"]["gappy"] == {"written": 1, "applied": 1, "gaps": 1}


def test_a_producer_without_a_live_run_is_told_how_to_start_one(ticker: Ticker) -> None:
    """No live run in the namespace: NoLiveRun with the command to open one."""

    async def attempt() -> None:
        async with Producer(ticker.redis_url, ticker.namespace):
            pass

    with pytest.raises(NoLiveRun, match="ticker live start"):
        asyncio.run(attempt())


def test_kill_9_of_the_aggregator_mid_stream_loses_and_repeats_nothing(ticker: Ticker) -> None:
    """The aggregator killed while batches flow, then restarted: exact totals."""
    _live(ticker)
    agg = ticker.start("aggregate", "--name", "first")

    async def write() -> None:
        async with Producer(ticker.redis_url, ticker.namespace, "p", batch_size=20) as p:
            for i in range(4_000):
                await p.add(_order(i, 500))
                if i == 2_000:
                    agg.send_signal(signal.SIGKILL)

    try:
        asyncio.run(write())
        agg.wait(10 * UNIT)
        again = ticker.start("aggregate", "--burst")
        state = _finish(ticker, again)
    finally:
        stop(agg)
    assert (state.orders, state.gmv_fen, state.duplicates) == (4_000, 2_000_000, 0)


def _two_shops(ticker: Ticker) -> State:
    """Two producers (one losing replies) with paid-at times out of order, ended."""
    agg = ticker.start("aggregate", "--burst")
    try:

        async def both() -> None:
            await asyncio.gather(
                _write(ticker, "shop-a", range(3_000, 0, -1), lose_every=4),
                _write(ticker, "shop-b", range(3_000, 4_000), lose_every=7),
            )

        asyncio.run(both())
        return _finish(ticker, agg)
    finally:
        stop(agg)


def test_live_verify_recounts_the_stream_and_finds_it_exactly_equal(ticker: Ticker) -> None:
    """A run kept with --audit: `ticker live verify` exits 0 and says so."""
    _live(ticker, "--audit")
    _two_shops(ticker)
    done = ticker.run("live", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify: OK" in done.stdout


def test_live_verify_fails_when_the_stream_and_the_state_disagree(ticker: Ticker) -> None:
    """One applied batch deleted from the stream: exit 1 with the differences."""
    _live(ticker, "--audit")
    _two_shops(ticker)
    with redis.Redis.from_url(ticker.redis_url) as r:
        orders = Keys(ticker.namespace).orders
        victim = next(i for i, f in r.xrange(orders) if f.get(b"producer") == b"shop-b")
        r.xdel(orders, victim)
    done = ticker.run("live", "verify")
    assert done.returncode == 1
    assert "DIFFERENT orders" in done.stdout


def test_orders_given_as_columns_are_counted_exactly(ticker: Ticker) -> None:
    """10,000 orders as numpy columns with category names: exact totals and tallies."""
    _live(ticker)
    agg = ticker.start("aggregate", "--burst")
    origin = 1_795_737_600_000  # 2026-11-27 00:00 UTC
    paid = origin + 36_000_000 + np.arange(10_000, dtype=np.int64) * 7
    cats = np.where(np.arange(10_000) % 4 == 0, "Shoes", "Bags")

    async def write() -> None:
        async with Producer(ticker.redis_url, ticker.namespace, "cols", batch_size=3_000) as p:
            await p.add_columns(paid, np.full(10_000, 250, dtype=np.int64), category=cats)

    try:
        asyncio.run(write())
        state = _finish(ticker, agg)
    finally:
        stop(agg)
    assert (state.orders, state.gmv_fen, state.producers) == (10_000, 2_500_000, {"cols": 4})
    tops = {c["name"]: c["orders"] for c in state.view()["top_categories"]}
    assert tops == {"Shoes": 2_500, "Bags": 7_500}


def test_a_bad_row_in_columns_is_named_and_nothing_is_written(ticker: Ticker) -> None:
    """A zero amount in row 3: OrderError(amount, line 3) and no batch written."""
    _live(ticker)

    async def write() -> int:
        async with Producer(ticker.redis_url, ticker.namespace, "cols") as p:
            paid = np.full(5, 1_795_737_600_000 + 1_000, dtype=np.int64)
            with pytest.raises(OrderError) as info:
                await p.add_columns(paid, np.array([1, 2, 0, 4, 5]))
            assert (info.value.field, info.value.line) == ("amount", 3)
            return p.seq

    assert asyncio.run(write()) == 0


def test_a_name_too_long_in_columns_is_named_by_its_first_row(ticker: Ticker) -> None:
    """A 101-character category first in rows 2 and 4: OrderError(category, line 2)."""
    _live(ticker)
    long = "x" * 101

    async def write() -> int:
        async with Producer(ticker.redis_url, ticker.namespace, "cols") as p:
            paid = np.full(4, 1_795_737_600_000 + 1_000, dtype=np.int64)
            with pytest.raises(OrderError) as info:
                await p.add_columns(paid, np.ones(4, np.int64), category=["a", long, "b", long])
            assert (info.value.field, info.value.line) == ("category", 2)
            return p.seq

    assert asyncio.run(write()) == 0
