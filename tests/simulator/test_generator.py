"""The day plan and generator: exact totals for any scale, seed and window; determinism."""

import itertools
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core.clock import DAY_MS

PROFILE = load("2018")


def totals(plan: DayPlan) -> tuple[int, int]:
    orders = gmv = 0
    for batch in plan.batches():
        orders += batch.n
        gmv += int(batch.columns["amt"].sum())
    return gmv, orders


def test_full_scale_plan_matches_published_totals() -> None:
    """At scale 1 the plan carries exactly RMB 213.5bn in 1,042,000,000 orders."""
    plan = DayPlan(PROFILE, Fraction(1), 0, DAY_MS)
    assert plan.total_gmv == 21_350_000_000_000
    assert plan.total_orders == 1_042_000_000


@settings(max_examples=10, deadline=None)
@given(
    scale=st.sampled_from(["0.0001", "0.00025", "0.0003", "0.0007"]),
    seed=st.integers(0, 2**32),
    minutes=st.lists(st.integers(1, 1439), max_size=3),
)
def test_any_split_into_windows_adds_up_exactly(scale: str, seed: int, minutes: list[int]) -> None:
    """Generated orders of any whole-minute windows tiling the day add up to the totals."""
    s = Fraction(scale)
    edges = sorted({0, DAY_MS, *(m * 60_000 for m in minutes)})
    gmv = orders = 0
    for a, b in itertools.pairwise(edges):
        g, o = totals(DayPlan(PROFILE, s, a, b, seed))
        gmv, orders = gmv + g, orders + o
    assert gmv == 21_350_000_000_000 * s.numerator // s.denominator
    assert orders == 1_042_000_000 * s.numerator // s.denominator


def test_orders_are_realistic_and_in_their_slot() -> None:
    """Every order is at least RMB 1, paid inside its batch's span, with valid indices."""
    plan = DayPlan(PROFILE, Fraction(1), 0, 5_000, seed=7)
    for batch in plan.batches():
        c = batch.columns
        assert c["amt"].min() >= 100
        assert batch.t0 <= c["at"].min() and c["at"].max() < batch.t1
        assert list(c["at"]) == sorted(c["at"])
        assert c["cat"].max() < len(PROFILE.categories)
        assert c["reg"].max() < len(PROFILE.regions)


def test_same_inputs_give_identical_batches_and_resume_continues_exactly() -> None:
    """Same profile, seed and scale give byte-identical batches; resuming skips nothing."""
    a = list(DayPlan(PROFILE, Fraction(1, 100), 0, 600_000, seed=3).batches())
    b = list(DayPlan(PROFILE, Fraction(1, 100), 0, 600_000, seed=3).batches())
    assert [x.seq for x in a] == list(range(1, len(a) + 1))
    for x, y in zip(a, b, strict=True):
        assert all(np.array_equal(x.columns[k], y.columns[k]) for k in x.columns)
    resumed = list(DayPlan(PROFILE, Fraction(1, 100), 0, 600_000, seed=3).batches(after_seq=37))
    assert [x.seq for x in resumed] == [x.seq for x in a[37:]]
    for x, y in zip(resumed, a[37:], strict=True):
        assert all(np.array_equal(x.columns[k], y.columns[k]) for k in x.columns)
    other = list(DayPlan(PROFILE, Fraction(1, 100), 0, 600_000, seed=4).batches())
    assert not np.array_equal(other[0].columns["amt"], a[0].columns["amt"])
