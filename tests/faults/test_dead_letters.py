"""Bad input never stops the pipeline: 1,000 malformed entries mixed into a live replay all
land in the dead-letter stream with a reason, and every good order counts exactly once."""

import threading
import time
from fractions import Fraction

import orjson

from simulator import profile
from simulator.generator import DayPlan
from tests.faults.conftest import Procs, RedisServer, final_state, load_state, wait_for
from tests.faults.fuzz import Fuzzer
from ticker.keys import Keys

RUN = "fuzz-2018-fixed"
FUZZED = 1_000


def test_a_thousand_fuzzed_entries_are_dead_letters_and_totals_stay_exact(
    aof_redis: RedisServer, procs: Procs
) -> None:
    """1,000 fuzzed entries during a replay: 1,000 dead letters with reasons, exact totals."""
    keys = Keys(procs.namespace)
    plan = DayPlan(profile.load("2018"), Fraction(1, 1000), 0, 3_600_000, 0, 4000)
    fuzz = Fuzzer(plan, RUN, seed=20181111).entries(FUZZED)
    agg = procs.start("aggregate", "--name", "agg")
    replay = procs.start(
        "replay", "--scale", "0.001", "--to", "01:00", "--speed", "450", "--run", RUN, "--quiet"
    )
    ids: list[bytes] = []

    def inject() -> None:
        with aof_redis.client() as r:
            for i in range(0, FUZZED, 25):
                pipe = r.pipeline(transaction=False)
                for _, fields in fuzz[i : i + 25]:
                    pipe.xadd(keys.orders, fields)  # type: ignore[arg-type]
                ids.extend(pipe.execute())
                time.sleep(0.1)

    wait_for(lambda: load_state(aof_redis, procs.namespace) is not None, 30, "the start entry")
    writer = threading.Thread(target=inject)
    writer.start()
    writer.join(60)
    assert replay.wait(60) == 0, procs.text(replay)

    live = final_state(aof_redis, procs, agg)
    assert live.run == RUN
    assert live.dead_letters == FUZZED
    assert live.gmv_fen == plan.base_gmv + plan.total_gmv
    assert live.orders == plan.base_orders + plan.total_orders
    assert live.last_seq == plan.end_seq and live.duplicates == 0
    with aof_redis.client() as r:
        dead = r.xrange(keys.dead_letters)
    assert len(dead) == FUZZED
    assert {d[b"id"] for _, d in dead} == set(ids)  # each fuzzed entry, and nothing else
    for _, d in dead:
        assert d[b"reason"].strip()
        orjson.loads(d[b"entry"])  # a bounded printable copy
        assert len(d[b"entry"]) < 20 * 250
    reasons = sorted({d[b"reason"].decode()[:40] for _, d in dead})
    print(f"{len(reasons)} distinct reasons, e.g. {reasons[:8]}")
    code, out = procs.run("verify")
    assert code == 0, out
