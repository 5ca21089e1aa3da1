"""Bounded memory: at max speed the orders stream stays within the replay's backpressure
bound (plus trimming slack) and the feed within its cap; Redis memory is reported."""

import time
from fractions import Fraction

from simulator import profile
from simulator.generator import DayPlan
from simulator.replay import MAX_BACKLOG, PIPELINE_BATCHES
from tests.faults.conftest import UNIT, Procs, RedisServer, load_state
from ticker.aggregator import READ_COUNT
from ticker.keys import FEED_MAXLEN, Keys

# XTRIM MINID ~ frees whole stream nodes (100 entries each by default), and the entries
# the aggregator has read but not yet committed are kept, on top of the replay's bound.
ORDERS_BOUND = MAX_BACKLOG + PIPELINE_BATCHES + READ_COUNT + 2 * 100
FEED_BOUND = FEED_MAXLEN + 2 * 100


def test_streams_stay_bounded_at_max_speed(aof_redis: RedisServer, procs: Procs) -> None:
    """A 1/100 replay of 00:00-01:00 at max speed: XLEN orders and feed stay bounded."""
    keys = Keys(procs.namespace)
    plan = DayPlan(profile.load("2018"), Fraction(1, 100), 0, 3_600_000, 0, 4000)
    replay = procs.start("replay", "--scale", "0.01", "--to", "01:00", "--speed", "max", "--quiet")
    peak = {"orders": 0, "feed": 0, "used_memory": 0}
    agg = None
    deadline = time.monotonic() + 120 * UNIT
    with aof_redis.client() as r:
        while (agg is None or agg.poll() is None) and time.monotonic() < deadline:
            if agg is None and (peak["orders"] >= MAX_BACKLOG or replay.poll() is not None):
                # The replay ran alone until its backpressure held it: now consume.
                agg = procs.start("aggregate", "--burst", "--name", "agg")
            pipe = r.pipeline(transaction=False)
            pipe.xlen(keys.orders)
            pipe.xlen(keys.feed)
            pipe.info("memory")
            orders, feed, info = pipe.execute()
            peak["orders"] = max(peak["orders"], orders)
            peak["feed"] = max(peak["feed"], feed)
            peak["used_memory"] = max(peak["used_memory"], int(info["used_memory"]))
            time.sleep(0.02)
        used_peak = int(r.info("memory")["used_memory_peak"])
    assert replay.wait(30) == 0, procs.text(replay)
    assert agg is not None and agg.wait(30) == 0, procs.text(agg)
    print(
        f"peak XLEN orders {peak['orders']} (bound {ORDERS_BOUND}), XLEN feed {peak['feed']}, "
        f"used_memory sampled peak {peak['used_memory'] / 2**20:.1f} MiB, "
        f"used_memory_peak {used_peak / 2**20:.1f} MiB, {plan.end_seq:,} batches"
    )
    live = load_state(aof_redis, procs.namespace)
    assert live is not None and live.ended
    assert live.orders == plan.base_orders + plan.total_orders
    assert peak["orders"] >= MAX_BACKLOG  # the backpressure was reached
    assert peak["orders"] <= ORDERS_BOUND
    assert peak["feed"] <= FEED_BOUND
