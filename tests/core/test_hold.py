"""Order within a run: nothing is applied ahead of a missing seq; held entries are bounded."""

import dataclasses

import pytest

from tests.core.test_aggregate import ENTRIES, fold
from tests.core.test_merge import PLAN
from ticker.core.aggregate import Ahead, Rejected, State
from ticker.core.batch import End, Orders, Start, decode
from ticker.core.hold import Held, Hold


def test_an_entry_beyond_the_next_seq_is_not_applied() -> None:
    """A batch far ahead raises Ahead and leaves the state as it was."""
    state, _ = fold(ENTRIES[:10])
    stray = dataclasses.replace(decode(ENTRIES[10]), seq=100_000)
    with pytest.raises(Ahead, match="seq 10 expected, got 100000"):
        state.apply(stray)
    assert state.last_seq == 9 and state.gaps == 0


def test_apply_many_skips_what_is_ahead_and_applies_the_rest_in_order() -> None:
    """A stray among real batches is left out; the real ones all apply."""
    state, _ = fold(ENTRIES[:10])
    real = [decode(f) for f in ENTRIES[10:20]]
    stray = dataclasses.replace(real[0], seq=100_000)
    _, rejected, ahead = state.apply_many([real[0], stray, *real[1:]])
    assert (rejected, ahead, state.last_seq) == ([], [1], 19)


def test_a_held_end_applies_once_the_missing_batch_comes() -> None:
    """Entries that came early apply, in seq order, when the gap fills."""
    state, _ = fold(ENTRIES[:-3])
    late, *early = [decode(f) for f in ENTRIES[-3:]]
    _, _, ahead = state.apply_many(early)
    assert ahead == [0, 1] and not state.ended
    _, _, ahead = state.apply_many([late, *early])
    assert ahead == [] and state.ended
    assert (state.gmv_fen, state.orders) == (fold(ENTRIES)[0].gmv_fen, fold(ENTRIES)[0].orders)


def test_entries_after_the_end_are_rejected() -> None:
    """Once a run ended, a later seq of it is a dead letter, never applied."""
    state, _ = fold(ENTRIES)
    end = decode(ENTRIES[-1])
    assert isinstance(end, End)
    with pytest.raises(Rejected, match="ended at seq"):
        state.apply(dataclasses.replace(end, seq=end.seq + 1))


def test_a_malformed_entry_ahead_is_rejected_not_held() -> None:
    """An out-of-range index is a dead letter at once, even ahead of the next seq."""
    state, _ = fold(ENTRIES[:5])
    bad = decode(ENTRIES[30] | {b"cat": bytes([200]) * len(ENTRIES[30][b"cat"])})
    assert isinstance(bad, Orders)
    with pytest.raises(Rejected, match="out of range"):
        state.apply(bad)


def test_the_hold_gives_up_after_its_wait() -> None:
    """An entry held longer than the wait is given up; a newer one stays."""
    hold = Hold(wait_s=10)
    entry = decode(ENTRIES[5])
    hold.add(Held(b"1-0", {}, entry, since=0.0))
    hold.add(Held(b"2-0", {}, entry, since=5.0))
    assert not hold.add(Held(b"2-0", {}, entry, since=6.0))  # read again: held already
    assert [h.entry_id for h in hold.give_up(now=12.0)] == [b"1-0"]
    assert len(hold) == 1 and hold.next_deadline() == 15.0


def test_a_full_hold_gives_up_the_highest_seqs() -> None:
    """Over the cap, the entries furthest ahead are given up first."""
    hold = Hold(wait_s=10, cap=2)
    for seq in (7, 9, 8):
        hold.add(Held(f"{seq}-0".encode(), {}, dataclasses.replace(decode(ENTRIES[5]), seq=seq), 0))
    assert [h.entry.seq for h in hold.give_up(now=1.0)] == [9]
    assert [h.entry.seq for h in hold.in_seq_order()] == [7, 8]


def test_a_shard_holds_its_end_until_its_own_batches_are_in() -> None:
    """On a shard, the end waits for the shard's missing seq, not other shards'."""
    state = State()
    meta = dataclasses.replace(PLAN.meta(), shards=3)
    state.apply(Start("r", 0, meta, shard=1))
    mine = [b.as_orders("r") for b in PLAN.batches() if (b.seq - 1) % 3 == 1]
    state.apply_many(mine[:-1])
    with pytest.raises(Ahead):
        state.apply(End("r", PLAN.end_seq, PLAN.to_ms))
    state.apply_many([mine[-1], End("r", PLAN.end_seq, PLAN.to_ms)])
    assert state.ended


def test_a_batch_of_another_shard_is_rejected() -> None:
    """On shard 1 of 2, a batch whose seq belongs to shard 0 is a dead letter."""
    state = State()
    state.apply(Start("r", 0, dataclasses.replace(PLAN.meta(), shards=2), shard=1))
    state.apply_many([b.as_orders("r") for b in PLAN.batches() if b.seq in (2, 4)])
    with pytest.raises(Rejected, match="belongs to shard 0"):
        state.apply(next(b.as_orders("r") for b in PLAN.batches() if b.seq == 5))
