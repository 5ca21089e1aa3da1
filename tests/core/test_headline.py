"""The day's headline figures in the view: cross-border orders and regions reached abroad."""

from fractions import Fraction

import numpy as np

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core.aggregate import State
from ticker.core.batch import End, Start

PLAN = DayPlan(load("2018"), Fraction(1, 1000), 0, 3_600_000, seed=3)


def _folded() -> State:
    state = State()
    state.apply(Start("r", 0, PLAN.meta()))
    state.apply_many([b.as_orders("r") for b in PLAN.batches()])
    state.apply(End("r", PLAN.end_seq, PLAN.to_ms))
    return state


def test_cross_border_orders_and_regions_abroad_are_recounted_exactly() -> None:
    """cross_border_orders counts orders from sellers abroad; regions abroad those that bought."""
    view = _folded().view()
    cty = np.concatenate([b.columns["cty"] for b in PLAN.batches()])
    reg = np.concatenate([b.columns["reg"] for b in PLAN.batches()])
    home = load("2018").home_regions
    assert view["cross_border_orders"] == int(np.count_nonzero(cty))
    assert view["buyer_regions_abroad"] == len(set(reg[reg >= home].tolist())) > 0


def test_a_run_that_does_not_say_its_home_regions_has_no_regions_abroad() -> None:
    """Without home_regions in its meta (an older or live run) the figure is None, not a guess."""
    state = State()
    meta = PLAN.meta()
    state.apply(Start("r", 0, type(meta)(**{**meta.__dict__, "home_regions": 0})))
    assert state.view()["buyer_regions_abroad"] is None
