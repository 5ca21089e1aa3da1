"""A live run's producers, held batches and dead letters on the aggregator's /metrics: a
few producers by name (the most recent), the rest summed; dead letters by kind of reason."""

import asyncio

import pytest
import redis

from tests.conftest import Ticker
from tests.live.test_live_run import _live, _order
from tests.ops.test_aggregator_metrics import aggregating, wait_for
from ticker.core.orders import Batcher, parse_order
from ticker.keys import Keys
from ticker.procmetrics import KINDS, PRODUCERS_SHOWN, Producers, reason_kind
from ticker.producer import Producer, live_run

PRODUCERS = 'ticker_live_producer_batches_total{producer="%s"}'


async def _one_batch_each(ticker: Ticker, names: list[str]) -> None:
    for name in names:
        async with Producer(ticker.redis_url, ticker.namespace, name) as p:
            await p.add(_order(len(name)))


def test_the_most_recent_producers_are_named_and_the_rest_summed(ticker: Ticker) -> None:
    """25 producers: the 20 that applied a batch last by name, 5 batches under _others."""
    _live(ticker)
    names = [f"till-{i:02d}" for i in range(25)]
    with aggregating(ticker) as url:
        asyncio.run(_one_batch_each(ticker, names))
        s = wait_for(url, lambda s: s["ticker_live_producers"] == 25)
        assert [n for n in names if PRODUCERS % n in s] == names[5:]
        assert s[PRODUCERS % "_others"] == 5
        asyncio.run(_one_batch_each(ticker, ["till-00"]))  # it comes back among the named
        s = wait_for(url, lambda s: s.get(PRODUCERS % "till-00") == 2)
        assert PRODUCERS % "till-05" not in s and s[PRODUCERS % "_others"] == 5


async def _write_raw(ticker: Ticker, producer: str, seq: int) -> None:
    """A batch of `producer` with this seq, past the producer's own checks (a stray writer)."""
    r = redis.asyncio.Redis.from_url(ticker.redis_url)
    run, meta = await live_run(r, Keys(ticker.namespace))
    b = Batcher(meta.countries[0])
    b.add(parse_order(_order(1), meta.origin_ms, meta.utc_offset_minutes))
    await r.xadd(Keys(ticker.namespace).orders, b.fields(run, producer, seq))
    await r.aclose()


def test_a_gap_and_a_malformed_entry_are_counted_by_reason_and_producer(
    ticker: Ticker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's seq 2 without 1 is held, then a `gap`; junk is `malformed`."""
    monkeypatch.setenv("TICKER_HOLD_SECONDS", "0.5")
    _live(ticker)
    with aggregating(ticker) as url, redis.Redis.from_url(ticker.redis_url) as r:
        asyncio.run(_write_raw(ticker, "stray", 2))
        r.xadd(Keys(ticker.namespace).orders, {"v": "1", "junk": "x"})
        by = 'ticker_aggregator_dead_letters_by_reason_total{shard="0",reason="%s"}'
        stray = 'ticker_live_producer_gaps_total{producer="stray"}'
        # The state and the dead-letter stream are read one after the other: wait for both.
        s = wait_for(url, lambda s: s.get(stray) == 1 and s[by % "malformed"] == 1)
    assert s[by % "gap"] == 1
    assert sum(s[by % k] for k in KINDS) == s['ticker_aggregator_dead_letters{shard="0"}'] == 2


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("producer 'p': seq 1 expected, got 3 (held 10.0s; the batches before it never came)",
         "gap"),
        ("entry of run 'a' but the current run is 'b' (its start entry was never applied)",
         "other_run"),
        ("run 'a' ended at seq 9; got seq 10", "after_end"),
        ("batch 3 belongs to shard 1, not to shard 0", "wrong_shard"),
        ("start entry has an invalid meta field: x", "bad_start"),
        ("missing column 'amt'", "malformed"),
    ],
)  # fmt: skip
def test_a_dead_letter_reason_has_one_of_a_few_kinds(reason: str, kind: str) -> None:
    """The aggregator's reasons fall into a bounded set of label values."""
    assert reason_kind(reason) == kind


def test_producers_shown_are_bounded_and_newest_first() -> None:
    """However many producers, PRODUCERS_SHOWN are named, the last to move first."""
    p = Producers()
    p.update("run", {f"p{i}": 1 for i in range(100)})
    p.update("run", {**{f"p{i}": 1 for i in range(100)}, "p3": 2})
    assert p.shown()[:2] == ["p3", "p99"] and len(p.shown()) == PRODUCERS_SHOWN
