"""The state's storage codec (ticker.core.codec) and the state's own resets, with lists."""

from fractions import Fraction

import numpy as np
import pytest

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core import codec
from ticker.core.aggregate import State
from ticker.core.batch import Start

PLAN = DayPlan(load("2018"), Fraction(1, 1000), 0, 600_000, seed=7)


def folded(run: str = "r") -> State:
    state = State()
    state.apply(Start(run, 0, PLAN.meta()))
    state.apply_many([b.as_orders(run) for b in PLAN.batches()])
    return state


def test_a_state_reads_back_as_it_was_written() -> None:
    """codec.loads of what codec.dumps and pack wrote gives the same bytes and view."""
    state = folded()
    again = codec.loads(codec.dumps(state), codec.pack(state.brand_gmv))
    assert codec.dumps(again) == codec.dumps(state) == state.dumps()
    assert again.view() == state.view()


def test_brand_tallies_pack_narrow_while_they_fit_and_refuse_bad_bytes() -> None:
    """4 bytes a value below 2**32, else 8; a negative tally or a torn blob is an error."""
    small, big = np.array([0, 7], dtype=np.int64), np.array([2**40], dtype=np.int64)
    assert len(codec.pack(small)) == 9 and len(codec.pack(big)) == 9
    assert codec.unpack(codec.pack(small)).tolist() == [0, 7]
    assert codec.unpack(codec.pack(big)).tolist() == [2**40]
    with pytest.raises(ValueError, match="negative"):
        codec.pack(np.array([-1], dtype=np.int64))
    with pytest.raises(ValueError, match="bad packed"):
        codec.unpack(b"\x04abc")


def test_a_new_run_starts_from_a_fresh_state_but_keeps_the_counters() -> None:
    """A second start resets the totals and tallies; duplicates, folded and gaps go on."""
    state = folded("r1")
    state.duplicates, state.gaps, folded_before = 2, 1, state.folded
    state.apply(Start("r2", 0, PLAN.meta()))
    assert (state.run, state.gmv_fen, state.orders) == ("r2", 0, 0)
    assert not state.fired and not state.brand_gmv.any() and state.top_brands() == []
    assert (state.duplicates, state.gaps, state.folded) == (2, 1, folded_before)


def test_a_replaced_brand_tally_is_rescanned_for_the_top_ten() -> None:
    """After rescan_brands, top_brands finds brands below the old tenth's GMV."""
    state = folded()
    state.top_brands()  # remembers the tenth's GMV as a floor
    state.brand_gmv = np.zeros_like(state.brand_gmv)
    state.brand_gmv[3] = 1
    state.rescan_brands()
    assert [b["id"] for b in state.top_brands()] == [3]
