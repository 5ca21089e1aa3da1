"""The day plan and generator: exact totals for any scale, seed and window; determinism."""

import itertools
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.generator import DENSE_PER_MS, DayPlan, _paid_at
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


def reference_block(plan: DayPlan, block: int) -> dict[str, np.ndarray]:
    """One block's orders made alone, draw after draw, as the generator is specified: its
    own generator seeded from (seed, block); paid-at times, amount weights, international
    flags (then the exact count restored), countries, brands, categories, regions."""
    s0, s1 = int(plan.block_first_slot[block]), int(plan.block_first_slot[block + 1])
    counts, n = plan.slot_orders[s0:s1], int(plan.cum[s1] - plan.cum[s0])
    seed = np.random.SeedSequence([plan.seed, int(plan.edges[s0]) // plan.block_ms])
    rng = np.random.Generator(np.random.PCG64(seed))
    at = _paid_at(rng, plan.edges[s0 : s1 + 1], counts, n)
    normal = rng.standard_normal(n, dtype=np.float32)
    slot_of = np.repeat(np.arange(len(counts)), counts)
    amt = DayPlan._amounts(normal, counts, plan.slot_gmv[s0:s1], slot_of, n)
    before, after = int(plan.cum_orders[s0]), int(plan.cum_orders[s1])
    intl = (after * plan.intl_num) // plan.intl_den - (before * plan.intl_num) // plan.intl_den
    is_intl = rng.random(n) * n < intl
    extra = int(np.count_nonzero(is_intl)) - intl
    if extra:
        pool = np.flatnonzero(is_intl if extra > 0 else ~is_intl)
        is_intl[rng.choice(pool, abs(extra), replace=False)] = extra < 0
    cty = np.zeros(n, dtype=np.uint8)
    cty[is_intl] = plan.intl.draw(rng.random(intl)) + 1
    brd = np.minimum(plan.brand.draw(rng.random(n)), PROFILE.brands - 1)
    cat, reg = plan.cat.draw(rng.random(n)), plan.reg.draw(rng.random(n))
    return {"at": at, "amt": amt, "cat": cat, "cty": cty, "reg": reg, "brd": brd}


def test_blocks_made_together_are_the_blocks_made_alone() -> None:
    """However the blocks are cut into pieces of work, quiet and busy blocks alike, the
    orders are exactly those of each block made alone (`reference_block`), in order, and
    every batch's paid-at times are sorted within its span."""
    cases = [
        # 1/50: one-second slots, the first minutes' busy enough to draw counts per ms.
        (DayPlan(PROFILE, Fraction(1, 50), 60_000, 240_000, seed=6), [[0, 3], [0, 1, 3]]),
        # 1/1000: many quiet minutes to a piece.
        (DayPlan(PROFILE, Fraction(1, 1000), 0, 7_200_000, seed=2), [[0, 120], [0, 7, 8, 120]]),
    ]
    for plan, cuts in cases:
        dense = plan.slot_orders >= DENSE_PER_MS * np.diff(plan.edges)
        busy = np.add.reduceat(dense, plan.block_first_slot[:-1]) > 0
        assert plan.blocks == cuts[0][-1]
        assert busy.any() == (plan.scale == Fraction(1, 50)) and not busy.all()
        made = [reference_block(plan, k) for k in range(plan.blocks)]
        alone = {k: np.concatenate([m[k] for m in made]) for k in made[0]}
        given = [[range(a, b) for a, b in itertools.pairwise(c)] for c in cuts]
        for cut in [plan.pieces(0), *given]:
            batches = [b for piece in cut for b in plan.piece_batches(piece)]
            assert [b.seq for b in batches] == list(range(1, plan.last_orders_seq + 1))
            for b in batches:
                at = b.columns["at"]
                assert b.t0 <= at[0] and at[-1] < b.t1 and bool(np.all(np.diff(at) >= 0))
            for k, column in alone.items():
                joined = np.concatenate([b.columns[k] for b in batches])
                assert np.array_equal(joined, column), k


def test_lookup_draws_what_a_binary_search_of_the_cdf_draws() -> None:
    """The guide table is each j / size's binary search of the CDF, and every draw is the
    first outcome whose CDF exceeds it, for ~180,000 brands as for a handful."""
    plan = DayPlan(PROFILE, Fraction(1, 1000), 0, 60_000)
    u = np.random.default_rng(1).random(200_000)
    u[:4] = [0.0, 0.5, 1 - 2**-53, plan.brand.cdf[10]]  # edges, and a draw equal to a CDF step
    for lookup in (plan.brand, plan.cat, plan.reg, plan.intl):
        queries = np.arange(lookup.size, dtype=np.float64) / lookup.size
        assert np.array_equal(lookup.guide, np.searchsorted(lookup.cdf, queries, side="right"))
        assert np.array_equal(lookup.draw(u), np.searchsorted(lookup.cdf, u, side="right"))
