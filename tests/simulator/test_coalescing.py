"""Coalesced batches: fewer entries for quiet slots, the same orders, totals and milestones."""

from fractions import Fraction

import numpy as np

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core.aggregate import State
from ticker.core.batch import Start
from ticker.core.clock import DAY_MS

PROFILE = load("2018")
SMALL = Fraction(1, 1000)


def fold(plan: DayPlan) -> State:
    state = State()
    state.apply(Start("r", 0, plan.meta()))
    state.apply_many([b.as_orders("r") for b in plan.batches()])
    return state


def joined(plan: DayPlan, column: str) -> np.ndarray:
    return np.concatenate([b.columns[column] for b in plan.batches()])


def test_a_miniature_day_is_a_few_entries_a_minute_not_one_a_second() -> None:
    """The 1/1000 day needs about one batch a minute instead of one a second."""
    coalesced = DayPlan(PROFILE, SMALL, 0, DAY_MS)
    plain = DayPlan(PROFILE, SMALL, 0, DAY_MS, coalesce=False)
    assert plain.last_orders_seq > 80_000
    assert coalesced.last_orders_seq < 2 * 1440


def test_coalescing_keeps_every_order_byte_for_byte() -> None:
    """The coalesced batches carry exactly the orders of the per-slot ones, in order."""
    a = DayPlan(PROFILE, SMALL, 0, 3 * 3_600_000, seed=5)
    b = DayPlan(PROFILE, SMALL, 0, 3 * 3_600_000, seed=5, coalesce=False)
    for column in ("at", "amt", "cat", "cty", "reg", "brd"):
        assert np.array_equal(joined(a, column), joined(b, column)), column


def test_coalescing_keeps_totals_tallies_and_milestone_times() -> None:
    """Folded, the coalesced day has the same totals, tallies and milestone sim times."""
    a = fold(DayPlan(PROFILE, SMALL, 0, DAY_MS, seed=1))
    b = fold(DayPlan(PROFILE, SMALL, 0, DAY_MS, seed=1, coalesce=False))
    assert (a.gmv_fen, a.orders) == (b.gmv_fen, b.orders) == (21_350_000_000, 1_042_000)
    assert [(f.milestone.id, f.sim_time_ms) for f in a.fired] == [
        (f.milestone.id, f.sim_time_ms) for f in b.fired
    ]
    assert a.fired and np.array_equal(a.brand_gmv, b.brand_gmv)
    assert np.array_equal(a.reg_orders, b.reg_orders)


def test_batches_never_cross_a_minute_so_the_curve_points_stay() -> None:
    """Every batch lies within one block: one simulated minute on a miniature day."""
    plan = DayPlan(PROFILE, SMALL, 0, DAY_MS)
    for batch in plan.batches():
        assert batch.t0 // 60_000 == (batch.t1 - 1) // 60_000
        assert batch.t0 <= int(batch.columns["at"][0]) <= int(batch.columns["at"][-1]) < batch.t1


def test_busy_slots_are_still_cut_one_slot_at_a_time() -> None:
    """At full scale around the peak, coalescing changes no batch: every slot is busy."""
    a = list(DayPlan(PROFILE, Fraction(1), 0, 2_000).batches())
    b = list(DayPlan(PROFILE, Fraction(1), 0, 2_000, coalesce=False).batches())
    assert [(x.seq, x.t0, x.t1, x.n) for x in a] == [(x.seq, x.t0, x.t1, x.n) for x in b]


def test_upto_and_end_of_seq_agree_with_the_batches() -> None:
    """The plan's orders, GMV and end time at any seq match the batches generated."""
    plan = DayPlan(PROFILE, Fraction(1, 100), 0, 1_200_000, seed=2)
    orders, gmv = plan.base_orders, plan.base_gmv
    for batch in plan.batches():
        orders += batch.n
        gmv += int(batch.columns["amt"].sum())
        assert plan.end_of_seq(batch.seq) == batch.t1
        at_seq = plan.upto(batch.seq)
        assert at_seq[0] == orders and at_seq[1] in (None, gmv)
    assert plan.upto(plan.last_orders_seq) == (orders, gmv)
