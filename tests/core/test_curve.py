"""The day's curve in the state: exact at every minute, bounded, persisted, merged."""

import dataclasses
from fractions import Fraction

import numpy as np
import orjson

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core import timeline
from ticker.core.aggregate import State
from ticker.core.batch import End, Orders, Start
from ticker.core.merge import Merge

PLAN = DayPlan(load("2018"), Fraction(1, 1000), 1_800_000, 5_400_000, seed=7)
HISTORY = ((0, 0, 0), (60_000, 5, 1), (1_800_000, PLAN.base_gmv, PLAN.base_orders))


def batches(run: str = "r") -> list[Orders]:
    return [b.as_orders(run) for b in PLAN.batches()]


def folded(sizes: int = 17, upto: int | None = None) -> State:
    """A state folded over the window in rounds of `sizes` batches (and the end)."""
    state = State()
    state.apply(Start("r", 0, dataclasses.replace(PLAN.meta(), history=HISTORY)))
    todo = batches()[:upto]
    for i in range(0, len(todo), sizes):
        state.apply_many(todo[i : i + sizes])
    if upto is None:
        state.apply(End("r", PLAN.end_seq, PLAN.to_ms))
    return state


def recount(minute: int) -> list[int]:
    """Brute force: the base plus every order of the window paid before `minute`."""
    gmv, orders = PLAN.base_gmv, PLAN.base_orders
    for b in PLAN.batches():
        paid = b.columns["at"] < minute
        gmv += int(b.columns["amt"][paid].sum())
        orders += int(paid.sum())
    return [minute, gmv, orders]


def test_every_minute_point_equals_a_brute_force_recount() -> None:
    """Each whole-minute point holds the totals of all orders paid before that minute."""
    curve = folded().curve()
    minutes = [p for p in curve if p[0] > PLAN.from_ms]
    assert [p[0] for p in minutes] == list(range(1_860_000, 5_400_001, 60_000))
    for point in minutes[::7] + minutes[-2:]:
        assert point == recount(point[0])
    assert curve[-1] == [
        PLAN.to_ms,
        PLAN.base_gmv + PLAN.total_gmv,
        PLAN.base_orders + PLAN.total_orders,
    ]


def test_curve_starts_with_the_history_then_the_window_start_once() -> None:
    """History before the window, one point at from_ms (not repeated), then the minutes."""
    curve = folded().curve()
    assert curve[:2] == [[0, 0, 0], [60_000, 5, 1]]
    assert curve[2] == [PLAN.from_ms, PLAN.base_gmv, PLAN.base_orders]
    assert [p[0] for p in curve].count(PLAN.from_ms) == 1
    assert len(curve) <= len(HISTORY) + 1_441


def test_latest_point_follows_the_clock_mid_run() -> None:
    """Mid-run the last point is the latest totals at the simulated time."""
    state = folded(upto=400)
    assert state.curve()[-1] == [state.sim_time_ms, state.gmv_fen, state.orders]
    assert state.view()["curve"] == state.curve()


def test_round_sizes_do_not_change_the_curve() -> None:
    """Folding one batch at a time or 200 at a time gives the same curve."""
    assert folded(1).curve() == folded(200).curve()


def test_a_batch_straddling_a_minute_is_split_exactly() -> None:
    """A writer whose batch spans a minute boundary still gets exact minute points."""
    meta = dataclasses.replace(PLAN.meta(), from_ms=0, to_ms=180_000, base_gmv_fen=0, base_orders=0)
    state = State()
    state.apply(Start("s", 0, meta))
    col = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    zero = col(0, 0, 0)
    state.apply(
        Orders(
            "s",
            1,
            59_000,
            61_000,
            col(59_000, 59_999, 60_000),
            col(1, 2, 4),
            zero,
            zero,
            zero,
            zero,
        )
    )
    state.apply(
        Orders(
            "s",
            2,
            59_500,
            61_000,
            col(59_600, 60_500),
            col(8, 16),
            zero[:2],
            zero[:2],
            zero[:2],
            zero[:2],
        )
    )
    state.apply(
        Orders(
            "s", 3, 130_000, 131_000, col(130_000), col(32), zero[:1], zero[:1], zero[:1], zero[:1]
        )
    )
    assert state.curve()[1:3] == [[60_000, 11, 3], [120_000, 31, 5]]


def test_curve_survives_dumps_and_loads_mid_run() -> None:
    """A reloaded state goes on to the same curve."""
    state = folded(upto=300)
    state = State.loads(state.dumps(), state.brand_blob())
    for b in batches()[300:]:
        state.apply(b)
    state.apply(End("r", PLAN.end_seq, PLAN.to_ms))
    assert state.curve() == folded().curve()


def test_a_state_saved_without_a_curve_loads() -> None:
    """An older state (no curve saved) loads with its window start and latest point."""
    state = folded(upto=300)
    data = orjson.loads(state.dumps())
    for name in ("curve", "next_minute", "carry", "held"):
        del data[name]
    old = State.loads(orjson.dumps(data), state.brand_blob())
    assert old.curve()[-1] == [state.sim_time_ms, state.gmv_fen, state.orders]
    assert [PLAN.from_ms, PLAN.base_gmv, PLAN.base_orders] in old.curve()


def test_sample_orders_survive_batches_without_cross_border_orders() -> None:
    """The newest cross-border orders stay listed after a batch that has none."""
    half = len(batches()) // 2
    state = folded(upto=half)
    before = state.view()["sample_orders"]
    b = batches()[half]
    state.apply(dataclasses.replace(b, cty=np.zeros_like(b.cty)))
    assert state.view()["sample_orders"] == before != []


def test_milestones_passed_before_the_window_are_listed_as_such() -> None:
    """A window from 00:30 lists the milestones its base passed, in threshold order."""
    view = folded().view()
    before = view["before_window"]
    base = PLAN.base_gmv
    assert [m["id"] for m in before] == ["gmv_1bn", "gmv_10bn", "gmv_19_1bn", "gmv_50bn"][
        : len(before)
    ]
    assert before and all(m["threshold"] <= base and m["documented"] for m in before)
    assert not {m["id"] for m in before} & {m["id"] for m in view["milestones"] + view["upcoming"]}
    assert view["from_ms"] == PLAN.from_ms


def test_feed_tail_joins_the_full_curve() -> None:
    """The tail a feed entry carries folds into an older full curve to the same curve."""
    early, late = folded(upto=200), folded()
    merged, joined = timeline.merge_tail(
        early.curve(), timeline.tail(late.curve(), PLAN.from_ms), PLAN.from_ms
    )
    assert not joined or merged == late.curve()
    whole, joined = timeline.merge_tail(
        late.curve()[:-3], timeline.tail(late.curve(), PLAN.from_ms), PLAN.from_ms
    )
    assert joined and whole == late.curve()


def test_merged_curve_of_a_sharded_run_equals_one_stream() -> None:
    """Three shards merged give the curve a lone aggregator gives."""
    from tests.core.test_merge import merge_all, one_stream, sharded

    merge = Merge()
    merge_all(merge, *sharded())
    assert merge.state.curve() == one_stream().curve()
