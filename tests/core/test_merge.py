"""The merge step's pure core: shards' parts and rows, in any interleaving, merge to exactly
what one stream gives."""

import dataclasses
import random
from fractions import Fraction

import numpy as np

from simulator.generator import DayPlan
from simulator.profile import load
from ticker.core.aggregate import State
from ticker.core.batch import End, Orders, Start, next_seq_of, shard_of
from ticker.core.merge import Merge, Row

PLAN = DayPlan(load("2018"), Fraction(1, 1000), 0, 3_600_000, seed=3)
SHARDS = 3


def one_stream() -> State:
    state = State()
    state.apply(Start("r", 0, PLAN.meta()))
    state.apply_many([b.as_orders("r") for b in PLAN.batches()])
    state.apply(End("r", PLAN.end_seq, PLAN.to_ms))
    return state


def sharded(run: str = "r") -> tuple[list[State], list[list[Row]], dict[str, Orders]]:
    """Each shard's final part, its rows in commit order, and every batch by entry id."""
    meta = dataclasses.replace(PLAN.meta(), shards=SHARDS)
    parts = [State() for _ in range(SHARDS)]
    rows: list[list[Row]] = [[] for _ in range(SHARDS)]
    batches: dict[str, Orders] = {}
    for i, part in enumerate(parts):
        part.apply(Start(run, 0, meta, shard=i))
    for b in PLAN.batches():
        i = shard_of(b.seq, SHARDS)
        batch = b.as_orders(run)
        batches[f"{i}-{b.seq}"] = batch
        parts[i].apply(batch)
    for i, part in enumerate(parts):
        part.apply(End(run, PLAN.end_seq, PLAN.to_ms))
        rows[i] = [Row(*r, i, f"{i}-{r[1]}") for r in part.journal]
        part.journal.clear()
    return parts, rows, batches


def merge_all(merge: Merge, parts: list[State], rows: list[list[Row]], batches: dict) -> None:
    for shard_rows in rows:
        merge.take(shard_rows)
    merge.absorb(parts)
    fetched: dict[str, Orders] = {}
    while True:
        _, need = merge.advance(fetched)
        if need is None:
            return
        fetched[need.row.entry_id] = batches[need.row.entry_id]


def test_a_shard_expects_only_its_own_seqs() -> None:
    assert [shard_of(s, 3) for s in range(1, 8)] == [0, 1, 2, 0, 1, 2, 0]
    assert next_seq_of(1, 3, 0) == 2 and next_seq_of(1, 3, 2) == 5 and next_seq_of(0, 1, 9) == 10


def test_merged_shards_equal_one_stream_with_milestones_at_the_same_orders() -> None:
    """Totals, tallies, top lists and each milestone's crossing time are those of one
    stream, although each shard alone crosses none of them."""
    want = one_stream()
    parts, rows, batches = sharded()
    assert all(p.fired == [] and p.gaps == 0 for p in parts)
    parts = [State.loads(p.dumps(), p.brand_blob()) for p in parts]  # as the merge reads them
    merge = Merge()
    merge_all(merge, parts, rows, batches)
    got = merge.state
    assert got.ended and (got.gmv_fen, got.orders) == (want.gmv_fen, want.orders)
    for name in ("cat_gmv", "cty_orders", "reg_gmv", "brand_gmv"):
        assert np.array_equal(getattr(got, name), getattr(want, name))
    assert [(f.milestone.id, f.sim_time_ms) for f in got.fired] == [
        (f.milestone.id, f.sim_time_ms) for f in want.fired
    ]
    assert len(want.fired) == 4
    assert got.view()["top_brands"] == want.view()["top_brands"]
    latest = max(p.recent[-1][0] for p in parts)
    assert got.view()["sample_orders"][-1]["at_ms"] == latest  # the newest cross-border order


def test_rows_in_any_interleaving_and_read_twice_fire_each_milestone_once() -> None:
    """Rows arrive shard by shard in pieces, interleaved at random, some read again (a
    merge step resumed from an older commit): the same result, nothing fired twice."""
    want = one_stream()
    parts, rows, batches = sharded()
    rng = random.Random(5)
    merge = Merge()
    cursors = [0] * SHARDS
    fired = []
    while any(c < len(r) for c, r in zip(cursors, rows, strict=True)):
        i = rng.randrange(SHARDS)
        step = rng.randrange(1, 40)
        again = max(0, cursors[i] - rng.randrange(0, 5))  # re-read a few
        merge.take(rows[i][again : cursors[i] + step])
        cursors[i] += step
        merge.absorb(parts)
        fetched: dict[str, Orders] = {}
        while True:
            new, need = merge.advance(fetched)
            fired += [f.milestone.id for f in new]
            if need is None:
                break
            fetched[need.row.entry_id] = batches[need.row.entry_id]
    assert fired == [f.milestone.id for f in want.fired]
    assert merge.state.ended and merge.state.gmv_fen == want.gmv_fen


def test_a_missing_batch_holds_the_milestone_until_it_can_be_read() -> None:
    """The crossing batch must be read back to place a milestone; until it is, the merge
    waits there (it never guesses) and resumes from its saved bookkeeping."""
    parts, rows, batches = sharded()
    merge = Merge()
    for shard_rows in rows:
        merge.take(shard_rows)
    merge.absorb(parts)
    fired, need = merge.advance({})
    assert fired == [] and need is not None
    assert merge.next_seq == need.row.seq  # stopped at the crossing batch
    again = Merge.loads(merge.dumps(), State.loads(merge.state.dumps(), merge.state.brand_blob()))
    assert again.next_seq == merge.next_seq and again.pending == merge.pending
    fired, _ = again.advance({need.row.entry_id: batches[need.row.entry_id]})
    assert [f.milestone.id for f in fired][:1] == ["gmv_1bn"]


def test_a_new_run_on_shard_0_replaces_the_old_one_and_drops_its_late_rows() -> None:
    """A seek starts a new run on every shard; shard 0 decides, and rows of the old run
    read afterwards (from a slower shard) are ignored."""
    parts, rows, _ = sharded("old")
    new_parts, new_rows, _ = sharded("new")
    merge = Merge()
    merge.take(rows[0][:5])
    merge.take(new_rows[0][:1])  # shard 0 starts the new run
    merge.take(rows[1])  # late rows of the old run
    assert merge.run == "new" and "old" in merge.retired
    assert all(key[0] == "new" for key in merge.pending)
    merge.absorb(parts + new_parts)  # only the new run's parts count
    assert merge.state.gmv_fen == PLAN.base_gmv + sum(p.gmv_fen for p in new_parts)
