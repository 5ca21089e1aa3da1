"""The reducer on a live run: per-producer seqs, names that grow, an exact curve. Pure."""

import pytest

from tests.live.helpers import RUN, batch, order, start
from ticker.core import aggregate
from ticker.core.aggregate import Ahead, Rejected, State
from ticker.core.batch import End, Orders


def _state() -> State:
    state = State()
    state.apply(start())
    return state


def test_two_producers_interleave_and_a_retried_batch_counts_once() -> None:
    """a1, b1, a2, a1 again: three batches counted, one duplicate."""
    state = _state()
    a1, b1 = batch("a", 1, [order(1), order(2)]), batch("b", 1, [order(3)])
    state.apply_many([a1, b1, batch("a", 2, [order(4)]), a1])
    assert (state.orders, state.gmv_fen, state.duplicates) == (4, 4_000, 1)
    assert state.producers == {"a": 2, "b": 1}


def test_a_producer_that_skips_a_seq_is_held_while_others_go_on() -> None:
    """a3 before a2 is ahead; b1 is applied meanwhile; a2 then lets a3 in."""
    state = _state()
    state.apply(batch("a", 1, [order(1)]))
    with pytest.raises(Ahead, match="producer 'a': seq 2 expected, got 3"):
        state.apply(batch("a", 3, [order(3)]))
    state.apply(batch("b", 1, [order(2)]))
    state.apply_many([batch("a", 2, [order(4)]), batch("a", 3, [order(3)])])
    assert (state.orders, state.producers) == (4, {"a": 3, "b": 1})


def test_a_late_order_raises_its_minute_and_every_later_point() -> None:
    """An order paid at 10:01 after the clock reached 10:05 lands in the 10:02 point on."""
    state = _state()
    state.apply(batch("a", 1, [order(1, minute=0), order(2, minute=5)]))
    state.apply(batch("b", 1, [order(3, minute=1, amount="1.00")]))
    points = {p[0]: p[1:] for p in state.curve()}
    base = 10 * 3_600_000
    assert points[base + 60_000] == [1_000, 1]
    assert points[base + 120_000] == [1_100, 2]
    assert points[base + 300_000] == [1_100, 2]
    assert state.changed_from == base + 120_000


def test_names_not_in_the_lists_are_added_then_tallied_as_other_beyond_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shoes is listed; Hats and Bags are added; with a cap of 3, Socks goes to Other."""
    monkeypatch.setitem(aggregate.NAME_CAPS, "cat", 3)
    state = _state()
    names = ["Shoes", "Hats", "Bags", "Socks"]
    state.apply(batch("a", 1, [order(i, category=c) for i, c in enumerate(names)]))
    top = {c["name"]: c["orders"] for c in state.view()["top_categories"]}
    assert top == {"Shoes": 1, "Hats": 1, "Bags": 1, "Other": 1}


def test_brands_and_sellers_from_batches_show_by_name() -> None:
    """A cross-border seller and a brand named only by the batch show in the view."""
    state = _state()
    state.apply(batch("a", 1, [order(1, seller_country="Japan", brand="Muji")]))
    view = state.view()
    assert [c["name"] for c in view["top_countries"]] == ["Japan"]
    assert [b["name"] for b in view["top_brands"]] == ["Muji"]


def test_a_batch_without_producer_is_refused_in_a_live_run() -> None:
    """A replay-style batch (no producer id) is rejected, with the reason."""
    state = _state()
    plain = batch("a", 1, [order(1)])
    anonymous = Orders(**{**plain.__dict__, "producer": ""})
    with pytest.raises(Rejected, match="need a producer id"):
        state.apply(anonymous)


def test_after_the_end_a_new_batch_is_refused_and_a_repeat_is_a_duplicate() -> None:
    """a1 again after the end counts as a duplicate; a2 is rejected: the run ended."""
    state = _state()
    a1 = batch("a", 1, [order(1)])
    state.apply(a1)
    state.apply(End(RUN, 1, 11 * 3_600_000))
    state.apply(a1)
    with pytest.raises(Rejected, match="ended"):
        state.apply(batch("a", 2, [order(2)]))
    assert (state.ended, state.orders, state.duplicates) == (True, 1, 1)


def test_a_live_state_survives_a_reload_exactly() -> None:
    """Producers, grown names and the per-minute counts come back from dumps/loads."""
    state = _state()
    state.apply(batch("a", 1, [order(1, minute=3, category="Hats", brand="Muji")]))
    again = State.loads(state.dumps(), state.brand_blob())
    assert again.producers == {"a": 1}
    assert again.view() == state.view()
    again.apply(batch("a", 2, [order(2, minute=1)]))
    points = {p[0]: p[1:] for p in again.curve()}
    assert points[10 * 3_600_000 + 120_000] == [1_000, 1]
