"""Producer retries are harmless, and `ticker verify` catches a tampered state."""

import threading
from fractions import Fraction

import orjson

from simulator import profile
from simulator.generator import DayPlan
from tests.faults.conftest import Procs, RedisServer, final_state
from ticker.keys import Keys


def _plan(to_ms: int) -> DayPlan:
    return DayPlan(profile.load("2018"), Fraction(1, 1000), 0, to_ms, 0, 4000)


def test_re_added_batches_are_counted_once(aof_redis: RedisServer, procs: Procs) -> None:
    """Copies of written batches (same run and seq) re-XADDed during a replay count once."""
    keys, run = Keys(procs.namespace), "retry-2018-fixed"
    plan = _plan(300_000)
    agg = procs.start("aggregate", "--name", "agg")
    replay = procs.start(
        "replay", "--scale", "0.001", "--to", "00:05", "--speed", "75", "--run", run, "--quiet"
    )
    copied: set[bytes] = set()
    stop = threading.Event()

    def retry() -> None:
        """Re-send the newest entry of the run, as a producer retrying a lost reply would."""
        with aof_redis.client() as r:
            while not stop.wait(0.1):
                newest = r.xrevrange(keys.orders, count=1)
                if not newest:
                    continue
                fields = newest[0][1]
                seq = fields.get(b"seq", b"")
                if fields.get(b"run") == run.encode() and seq not in copied:
                    r.xadd(keys.orders, fields)  # type: ignore[arg-type]
                    copied.add(seq)

    writer = threading.Thread(target=retry)
    writer.start()
    try:
        assert replay.wait(60) == 0, procs.text(replay)
    finally:
        stop.set()
        writer.join()

    live = final_state(aof_redis, procs, agg)
    print(f"{len(copied)} batches sent twice; duplicates {live.duplicates}")
    assert len(copied) >= 5
    assert live.duplicates == len(copied)
    assert live.gmv_fen == plan.base_gmv + plan.total_gmv
    assert live.orders == plan.base_orders + plan.total_orders
    assert live.dead_letters == 0
    code, out = procs.run("verify")
    assert code == 0, out


def test_verify_names_what_was_tampered_with(aof_redis: RedisServer, procs: Procs) -> None:
    """One fen added to gmv_fen and to a category's tally: `ticker verify` exits 1, names both."""
    keys = Keys(procs.namespace)
    agg = procs.start("aggregate", "--burst", "--name", "agg")
    code, out = procs.run("replay", "--scale", "0.001", "--to", "00:03", "--speed", "max")
    assert code == 0, out
    assert agg.wait(60) == 0, procs.text(agg)
    code, out = procs.run("verify")
    assert code == 0, out
    with aof_redis.client() as r:
        blob = orjson.loads(r.hget(keys.state, "state"))  # type: ignore[arg-type]
        blob["gmv_fen"] += 1
        i = max(range(len(blob["cat_gmv"])), key=lambda k: blob["cat_gmv"][k])
        blob["cat_gmv"][i] += 1
        r.hset(keys.state, "state", orjson.dumps(blob))
    category = blob["meta"]["categories"][i]
    code, out = procs.run("verify")
    assert code == 1, out
    assert "DIFFERENT gmv_fen" in out
    assert f"DIFFERENT cat_gmv[{category}]" in out
    print(out[-600:])
