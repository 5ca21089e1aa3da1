"""One active consumer whatever the names: same-named aggregators fence each other."""

from fractions import Fraction

from simulator import profile
from simulator.generator import DayPlan
from tests.faults.conftest import Procs, RedisServer, load_state, wait_for
from ticker.keys import Keys


def test_two_aggregators_with_the_same_name_fence_each_other(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """Two `aggregate --name same` over a replay: exact totals, one stands by, no fights."""
    plan = DayPlan(profile.load("2018"), Fraction(1, 1000), 0, 300_000, 0, 4000)
    aggs = [procs.start("aggregate", "--name", "same") for _ in range(2)]
    code, out = procs.run("replay", "--scale", "0.001", "--to", "00:05", "--speed", "75", "--quiet")
    assert code == 0, out
    wait_for(lambda: (s := load_state(aof_redis, procs.namespace)) and s.ended, 60, "the end")
    live = load_state(aof_redis, procs.namespace)
    assert live is not None
    assert (live.gmv_fen, live.orders) == (plan.total_gmv, plan.total_orders)
    with aof_redis.client() as r:
        holder = r.get(Keys(procs.namespace).lease) or b""
    assert holder.startswith(b"same#")
    logs = [procs.text(a, tail=100_000) for a in aggs]
    assert sum("standing by" in log for log in logs) == 1, logs
    assert not any("reply was lost" in log or "Traceback" in log for log in logs), logs
