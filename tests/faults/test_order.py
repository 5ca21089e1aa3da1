"""Order within a run, on a real Redis: a stray seq from the future is held, then
dead-lettered, and the day still ends exact; a missing batch another consumer read is
claimed; a run that cannot end makes `aggregate --burst` fail, not hang."""

import signal
from fractions import Fraction

import pytest

from simulator import profile
from simulator.generator import DayPlan
from tests.faults.conftest import Procs, RedisServer, final_state, load_state, wait_for
from ticker.core.batch import encode_end, encode_orders, encode_start
from ticker.keys import GROUP, Keys

RUN = "order-2018-fixed"


def _plan(to_ms: int) -> DayPlan:
    return DayPlan(profile.load("2018"), Fraction(1, 1000), 0, to_ms, 0, 4000)


def _entries(plan: DayPlan, run: str, upto: int) -> list[dict[bytes, bytes]]:
    """The run's start, its first `upto` batches, and its end (the end's seq follows them)."""
    batches = [b for _, b in zip(range(upto), plan.batches(), strict=False)]
    out = [encode_start(run, plan.meta())]
    out += [encode_orders(run, b.seq, b.t0, b.t1, b.columns) for b in batches]
    return [*out, encode_end(run, batches[-1].seq + 1, batches[-1].t1)]


@pytest.fixture(autouse=True)
def short_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Aggregators started by these tests give a held entry up after 2 s."""
    monkeypatch.setenv("TICKER_HOLD_SECONDS", "2")


def test_a_stray_future_batch_is_dead_lettered_and_the_day_ends_exact(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """One batch with seq +100,000 XADDed mid-replay: exact totals, `ended`, one dead letter."""
    keys, plan = Keys(procs.namespace), _plan(900_000)
    agg = procs.start("aggregate", "--name", "agg")
    replay = procs.start(
        "replay", "--scale", "0.001", "--to", "00:15", "--speed", "60", "--run", RUN, "--quiet"
    )
    wait_for(
        lambda: (s := load_state(aof_redis, procs.namespace)) and s.last_seq > 5, 30, "batches"
    )
    state = load_state(aof_redis, procs.namespace)
    assert state is not None
    stray = _entries(plan, RUN, 1)[1] | {b"seq": str(state.last_seq + 100_000).encode()}
    with aof_redis.client() as r:
        r.xadd(keys.orders, stray)  # type: ignore[arg-type]
    held = lambda: (s := load_state(aof_redis, procs.namespace)) and s.held == 1  # noqa: E731
    wait_for(held, 10, "the stray shown as held in the state")
    assert replay.wait(60) == 0, procs.text(replay)
    live = final_state(aof_redis, procs, agg)
    assert (live.gmv_fen, live.orders) == (plan.total_gmv, plan.total_orders)
    assert (live.gaps, live.held, live.last_seq) == (1, 0, plan.end_seq)
    with aof_redis.client() as r:
        dead = r.xrange(keys.dead_letters)
    assert len(dead) == 1 and b"expected, got" in dead[0][1][b"reason"], dead
    log = procs.text(agg, tail=100_000)
    assert "holding it" in log
    assert f"applied {plan.total_orders:,} orders" in log  # the stray is not counted


def test_a_missing_batch_another_consumer_read_is_claimed_and_applied_in_order(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """Batch 2 read (never acknowledged) by another consumer: claimed, then 3 and the end."""
    keys, plan = Keys(procs.namespace), _plan(60_000)
    entries = _entries(plan, RUN, 3)
    with aof_redis.client() as r:
        for fields in entries[:2]:
            r.xadd(keys.orders, fields)  # type: ignore[arg-type]
        agg = procs.start("aggregate", "--name", "agg")
        wait_for(lambda: (s := load_state(aof_redis, procs.namespace)) and s.last_seq == 1, 30, "1")
        agg.send_signal(signal.SIGSTOP)
        # A copy of batch 1 first: it ends the stopped aggregator's blocked read, if any.
        for fields in entries[1:3]:
            r.xadd(keys.orders, fields)  # type: ignore[arg-type]
        read = r.xreadgroup(GROUP, "ghost", {keys.orders: ">"}, count=10)
        assert b"2" in [f[b"seq"] for _, f in read[0][1]]  # batch 2: pending, the ghost's
        for fields in entries[3:]:
            r.xadd(keys.orders, fields)  # type: ignore[arg-type]
        agg.send_signal(signal.SIGCONT)
    live = final_state(aof_redis, procs, agg)
    assert live.last_seq == 4 and live.dead_letters == 0 and live.duplicates == 1
    assert live.gaps == 0  # 3 and the end came first, were held, then applied after 2
    assert "holding it" in procs.text(agg, tail=100_000)
    assert live.orders == sum(b.n for _, b in zip(range(3), plan.batches(), strict=False))


def test_burst_fails_with_the_reason_when_the_run_cannot_end(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """Batch 2 never written: `aggregate --burst` exits 1 saying the run cannot complete."""
    keys = Keys(procs.namespace)
    entries = _entries(_plan(60_000), RUN, 3)
    with aof_redis.client() as r:
        for i, fields in enumerate(entries):
            if i != 2:
                r.xadd(keys.orders, fields)  # type: ignore[arg-type]
    code, out = procs.run("aggregate", "--burst", "--name", "agg", timeout=60)
    assert code == 1, out
    assert "cannot complete" in out and "seq 2 expected, got 4" in out, out


def test_a_stray_on_one_shard_is_dead_lettered_and_the_sharded_day_ends_exact(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """Two shards: a batch far ahead on shard 1's stream is held, dead-lettered, not counted."""
    keys, plan = Keys(procs.namespace), _plan(900_000)
    agg = procs.start("aggregate", "--shards", "2", "--name", "A")
    replay = procs.start(
        "replay", "--scale", "0.001", "--to", "00:15", "--speed", "60", "--run", RUN,
        "--quiet", "--shards", "2",
    )  # fmt: skip
    part = lambda: load_state(aof_redis, f"{procs.namespace}/1")  # noqa: E731
    wait_for(lambda: (s := part()) and s.last_seq > 5, 30, "shard 1's first batches")
    state = part()
    assert state is not None
    stray = _entries(plan, RUN, 2)[2] | {b"seq": str(state.last_seq + 100_000).encode()}
    with aof_redis.client() as r:
        r.xadd(keys.shard(1).orders, stray)  # type: ignore[arg-type]
    assert replay.wait(60) == 0, procs.text(replay)
    live = final_state(aof_redis, procs, agg)
    assert (live.gmv_fen, live.orders) == (plan.total_gmv, plan.total_orders)
    assert live.gaps == 1 and live.curve()[-1][1:] == [plan.total_gmv, plan.total_orders]
    with aof_redis.client() as r:
        dead = r.xrange(keys.shard(1).dead_letters)
    assert len(dead) == 1 and b"expected, got" in dead[0][1][b"reason"], dead
