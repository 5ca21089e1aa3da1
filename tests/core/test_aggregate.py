"""The aggregation reducer and the stream format, fed plain lists of entries."""

import contextlib
from fractions import Fraction

import numpy as np
import pytest

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core.aggregate import Rejected, State
from ticker.core.batch import BadEntry, End, Orders, decode, encode_end, encode_orders, encode_start

PLAN = DayPlan(load("2018"), Fraction(1, 1000), 0, 3_600_000, seed=1)


def entries() -> list[dict[bytes, bytes]]:
    out = [encode_start("r1", PLAN.meta())]
    out += [encode_orders("r1", b.seq, b.t0, b.t1, b.columns) for b in PLAN.batches()]
    out.append(encode_end("r1", PLAN.end_seq, PLAN.to_ms))
    return out


ENTRIES = entries()


def fold(raw: list[dict[bytes, bytes]]) -> tuple[State, list[str]]:
    state, fired = State(), []
    for fields in raw:
        fired += [f.milestone.id for f in state.apply(decode(fields))]
    return state, fired


def test_folding_the_first_hour_gives_exact_totals_and_milestones_in_order() -> None:
    """The first hour at 1/1000 sums exactly and fires 1bn, 10bn, 19.1bn, 50bn in order."""
    state, fired = fold(ENTRIES)
    assert state.gmv_fen == PLAN.total_gmv and state.orders == PLAN.total_orders
    assert int(state.cat_gmv.sum()) == state.gmv_fen == int(state.cty_gmv.sum())
    assert int(state.reg_orders.sum()) == state.orders
    assert fired == ["gmv_1bn", "gmv_10bn", "gmv_19_1bn", "gmv_50bn"]
    assert state.ended


def test_crossing_time_is_the_paid_at_of_the_crossing_order() -> None:
    """A milestone's time is that of the order whose amount carried the total past it."""
    state = State()
    state.apply(decode(ENTRIES[0]))
    for fields in ENTRIES[1:]:
        entry = decode(fields)
        before = state.gmv_fen
        fired = state.apply(entry)
        for f in fired:
            assert isinstance(entry, Orders)
            cum = before + np.cumsum(entry.amt.astype(np.int64))
            i = int(np.argmax(cum >= f.milestone.threshold))
            assert f.sim_time_ms == int(entry.at[i])


def test_duplicates_are_counted_once() -> None:
    """Every entry applied twice (a producer retry) changes nothing."""
    doubled = [e for fields in ENTRIES for e in (fields, fields)]
    state, fired = fold(doubled)
    clean, clean_fired = fold(ENTRIES)
    assert (state.gmv_fen, state.orders, fired) == (clean.gmv_fen, clean.orders, clean_fired)
    assert state.duplicates == len(ENTRIES)


def test_state_survives_a_round_trip_mid_run() -> None:
    """Dumping and reloading the state halfway gives the same end result."""
    half = len(ENTRIES) // 2
    state, fired = fold(ENTRIES[:half])
    state = State.loads(state.dumps(), state.brand_blob())
    for fields in ENTRIES[half:]:
        fired += [f.milestone.id for f in state.apply(decode(fields))]
    clean, clean_fired = fold(ENTRIES)
    assert (state.gmv_fen, state.orders, fired) == (clean.gmv_fen, clean.orders, clean_fired)
    assert state.view() == clean.view()


def test_entry_of_an_unknown_run_is_rejected() -> None:
    """Orders of a run whose start was never seen are rejected, not counted."""
    state, _ = fold(ENTRIES[:3])
    stray = decode(ENTRIES[3] | {b"run": b"other"})
    with pytest.raises(Rejected, match="current run is 'r1'"):
        state.apply(stray)
    assert isinstance(decode(ENTRIES[-1]), End)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({b"v": b"9"}, "unknown schema version"),
        ({b"kind": b"refund"}, "unknown kind"),
        ({b"n": b"x"}, "not an integer"),
        ({b"n": b"0"}, "outside"),
        ({b"amt": b"\x00" * 3}, "column 'amt' has 3 bytes"),
        ({b"seq": b"-1"}, "outside"),
        ({b"t0": b"99999999999"}, "outside"),
    ],
)
def test_malformed_entries_say_what_is_wrong(change: dict[bytes, bytes], says: str) -> None:
    """Each kind of malformed entry raises BadEntry with a specific reason."""
    with pytest.raises(BadEntry, match=says):
        decode(ENTRIES[1] | change)


def test_negative_or_absurd_amounts_are_bad() -> None:
    """Amounts must be positive and below RMB 10m."""
    b = next(PLAN.batches())
    for value in (-5, 0, 10**12):
        cols = dict(b.columns)
        amt = cols["amt"].copy()
        amt[0] = value
        cols["amt"] = amt
        with pytest.raises(BadEntry, match="amounts must be"):
            decode(encode_orders("r1", b.seq, b.t0, b.t1, cols))


def test_folding_in_groups_equals_folding_one_by_one() -> None:
    """apply_many over rounds of any size, duplicates and strays included, equals apply."""
    rng = np.random.default_rng(5)
    mixed = [decode(f) for f in ENTRIES]
    stray = decode(ENTRIES[5] | {b"run": b"other"})
    bad_index = decode(ENTRIES[25] | {b"cat": bytes([200]) * len(ENTRIES[25][b"cat"])})
    mixed[20:20] = [stray, mixed[7], bad_index]
    one_by_one, fired_one = State(), []
    for e in mixed:
        with contextlib.suppress(Rejected):
            fired_one += [f.milestone.id for f in one_by_one.apply(e)]
    grouped, fired_grouped, rejected = State(), [], []
    i = 0
    while i < len(mixed):
        size = int(rng.integers(1, 40))
        fired, bad, ahead = grouped.apply_many(mixed[i : i + size])
        assert ahead == []
        fired_grouped += [f.milestone.id for f in fired]
        rejected += [i + k for k, _ in bad]
        i += size
    assert rejected == [20, 22]
    assert fired_grouped == fired_one
    assert (grouped.gmv_fen, grouped.orders) == (one_by_one.gmv_fen, one_by_one.orders)
    assert np.array_equal(grouped.cat_gmv, one_by_one.cat_gmv)
    assert grouped.view()["milestones"] == one_by_one.view()["milestones"]
