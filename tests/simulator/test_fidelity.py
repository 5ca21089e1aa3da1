"""Fidelity: a scaled day, generated and folded in process, keeps to each profile's facts."""

from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from simulator.profile import load
from ticker.profile_check import Report, replay, table

SCALE = Fraction(1, 1000)
BUNDLED = ("2017", "2018", "2019")
TOP_PROVINCES = (
    "Guangdong", "Beijing", "Jiangsu", "Shandong", "Sichuan", "Henan", "Hubei", "Fujian",
)  # fmt: skip


@cache
def day(name: str, scale: Fraction = SCALE, seed: int = 0) -> Report:
    return replay(load(name), scale, seed)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_documented_point_is_crossed_within_tolerance(name: str) -> None:
    """Each GMV and orders point is crossed within 1% of its time (5 s before 00:05)."""
    report = day(name)
    out = [c for c in report.checks if not c.ok]
    assert not out, [(c.metric, c.point, c.replayed_ms) for c in out]
    n = len(report.checks)
    assert table(report)[-1] == f"{n}/{n} points within tolerance"


@pytest.mark.parametrize("name", BUNDLED)
def test_final_totals_are_exact(name: str) -> None:
    """The folded day ends at exactly the scaled final GMV (fen) and order count."""
    report, p = day(name), load(name)
    assert report.state.gmv_fen == p.final_gmv_fen * SCALE.numerator // SCALE.denominator
    assert report.state.orders == p.final_orders * SCALE.numerator // SCALE.denominator
    assert report.state.gmv_fen == int(report.state.brand_gmv.sum())


@pytest.mark.parametrize("name", BUNDLED)
def test_top_ten_categories_and_countries_end_in_the_profile_order(name: str) -> None:
    """Top-10 categories and cross-border seller countries by GMV end in the listed order."""
    view, p = day(name).state.view(), load(name)
    assert [c["name"] for c in view["top_categories"]] == [c.name for c in p.categories[:10]]
    assert [c["name"] for c in view["top_countries"]] == [c.name for c in p.countries[1:11]]


@pytest.mark.parametrize("name", BUNDLED)
def test_forty_percent_of_orders_are_international(name: str) -> None:
    """International (cross-border) orders are 40% of all, within 0.1 point."""
    s = day(name).state
    share = (s.orders - int(s.cty_orders[0])) / s.orders
    assert abs(share - 0.40) <= 0.001


def test_buyers_come_from_the_provinces_in_order_and_230_regions_abroad() -> None:
    """2018: top provinces in TechNode's order; all 230 regions abroad have buyers."""
    s, p = day("2018").state, load("2018")
    home = s.reg_orders[: p.home_regions]
    assert tuple(p.regions[i].name for i in np.argsort(-home, kind="stable")[:8]) == TOP_PROVINCES
    assert np.count_nonzero(s.reg_orders[p.home_regions :]) == 230


@pytest.mark.parametrize(("name", "count"), [("2017", 167), ("2018", 237), ("2019", 299)])
def test_exactly_the_documented_number_of_brands_pass_rmb_100m(name: str, count: int) -> None:
    """Exactly 237 (2018) / 299 (2019) brands end above RMB 100m x scale."""
    assert day(name).state.view()["brands_over_100m"] == count


def test_brand_count_holds_at_another_scale_and_seed() -> None:
    """At 1/10,000 and another seed, 2018 still has exactly 237 brands over the line."""
    assert day("2018", Fraction(1, 10_000), 9).state.view()["brands_over_100m"] == 237


def test_the_nine_named_brands_are_over_the_line_and_lead_the_top_ten() -> None:
    """Apple, Dyson, ..., Adidas are all above RMB 100m and named in top_brands."""
    s, p = day("2018").state, load("2018")
    assert s.meta is not None
    assert np.all(s.brand_gmv[: len(p.named_brands)] > s.meta.brand_line_fen)
    names = [b["name"] for b in s.view()["top_brands"]]
    assert len(names) == 10 and set(p.named_brands) <= set(names)


def test_top_brands_stay_exact_while_the_day_is_folded() -> None:
    """top_brands, viewed after every round, always equals a full sort of the tally."""
    from simulator.generator import DayPlan
    from ticker.core.aggregate import State
    from ticker.core.batch import Orders, Start

    plan = DayPlan(load("2018"), SCALE, 0, 600_000, seed=2)
    state = State()
    state.apply(Start("r", 0, plan.meta()))
    batches = [
        Orders(
            "r",
            b.seq,
            b.t0,
            b.t1,
            *(b.columns[k] for k in ("at", "amt", "cat", "cty", "reg", "brd")),
        )
        for b in plan.batches()
    ]
    for i in range(0, len(batches), 16):
        state.apply_many(list(batches[i : i + 16]))
        gmv = state.brand_gmv
        brute = [int(k) for k in np.lexsort((np.arange(len(gmv)), -gmv))[:10] if gmv[k] > 0]
        assert [b["id"] for b in state.view()["top_brands"]] == brute
