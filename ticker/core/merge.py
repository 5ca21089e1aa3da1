"""The merge step of a sharded run: global totals and milestones from the shards' parts.

Each shard's aggregator keeps the totals of the batches on its stream (a `State` part)
and journals every entry it applies as a row. The merge step

- sums the parts for the totals, top lists and rates (a part is a committed state, so
  reading it twice, or an older copy after a failover, never counts anything twice), and
- puts the rows back in seq order, the order the orders were paid, to fire each milestone
  exactly once at the order that crosses it: rows are keyed by (run, seq), so a row read
  again is the same row, and the crossing batch itself is read back (`Need`) to find the
  crossing order's time.

Shard 0's rows decide the current run: a replay that seeks starts a new run on every
shard, and shard 0 sees the runs in the order they were written.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ticker.core.aggregate import RECENT_ORDERS, TALLIES, Fired, State, crossings
from ticker.core.batch import Orders
from ticker.core.timeline import STEP_MS

RETIRED_RUNS = 16  # runs a seek replaced, remembered so their late rows are dropped


@dataclass(frozen=True)
class Row:
    """One entry a shard applied: its run and seq, its orders and GMV, where it is."""

    run: str
    seq: int
    orders: int
    gmv_fen: int
    sim_ms: int
    shard: int
    entry_id: str


@dataclass(frozen=True)
class Need:
    """The merge needs this batch's orders to place a milestone exactly (see `advance`)."""

    row: Row


@dataclass
class Merge:
    """What the merge step has ordered so far; persisted with each merged commit."""

    run: str | None = None
    next_seq: int = 0  # every seq below this is taken, in order
    prefix_gmv_fen: int = 0  # GMV and orders of those seqs (the window's base excluded)
    prefix_orders: int = 0
    pending: dict[tuple[str, int], Row] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    cursors: dict[int, str] = field(default_factory=dict)  # per shard: last row entry read
    floors: dict[int, str] = field(default_factory=dict)  # per shard: last orders entry done
    state: State = field(default_factory=State)  # the merged view, as the feed shows it
    parts_ended: bool = False  # every shard's part has applied the run's end (see absorb)

    # -- rows ---------------------------------------------------------------------------

    def take(self, rows: list[Row]) -> None:
        """Add rows as read from one shard, in that shard's order."""
        for row in rows:
            if row.run in self.retired:
                continue
            if row.shard == 0 and row.seq == 0 and row.run != self.run:
                self._switch(row.run)
            if row.run == self.run and row.seq < self.next_seq:
                continue  # taken already (every shard journals the run's start and end)
            self.pending[(row.run, row.seq)] = row

    def _switch(self, run: str) -> None:
        if self.run is not None:
            self.retired = [*self.retired, self.run][-RETIRED_RUNS:]
        self.run, self.next_seq, self.prefix_gmv_fen, self.prefix_orders = run, 0, 0, 0
        self.pending = {key: row for key, row in self.pending.items() if key[0] == run}
        self.floors = {}
        self.state = State(run=run)

    def advance(self, fetched: dict[str, Orders]) -> tuple[list[Fired], Need | None]:
        """Take pending rows in seq order; fire the milestones they cross.

        Stops at the first missing seq, or at a batch that crosses a milestone whose
        orders are not in `fetched` (by entry id): it returns that `Need`, and the caller
        reads the batch and calls again. Needs the run's meta (`state.meta`).
        """
        meta = self.state.meta
        fired: list[Fired] = []
        if meta is None or self.run is None:
            return fired, None
        while (row := self.pending.get((self.run, self.next_seq))) is not None:
            gmv = meta.base_gmv_fen + self.prefix_gmv_fen
            orders = meta.base_orders + self.prefix_orders
            done = {f.milestone.id for f in self.state.fired}
            crossed = [
                m
                for m in meta.milestones
                if m.id not in done
                and (gmv if m.metric == "gmv_fen" else orders)
                < m.threshold
                <= (gmv + row.gmv_fen if m.metric == "gmv_fen" else orders + row.orders)
            ]
            if crossed:
                batch = fetched.get(row.entry_id)
                if batch is None:
                    return fired, Need(row)
                new = crossings(crossed, batch.at, batch.amt, gmv, orders)
                self.state.fired.extend(new)
                fired += new
            del self.pending[(self.run, self.next_seq)]
            if row.orders:
                # A batch lies within one slot, and slots never straddle a minute (they
                # are 100 ms or 1 s on the clock's grid): every minute up to the one its
                # last order falls in is over before it.
                self.state.fix_minutes((row.sim_ms - 1) // STEP_MS * STEP_MS, gmv, orders)
            elif row.seq:  # the run's end: every minute up to it is over
                self.state.fix_minutes(row.sim_ms, gmv, orders)
            self.prefix_gmv_fen += row.gmv_fen
            self.prefix_orders += row.orders
            self.next_seq += 1
            self.state.last_seq = row.seq  # every batch up to here is merged (`verify`)
            if row.orders:
                self.floors[row.shard] = row.entry_id
        # Ended once every shard has applied the end and every seq before it is taken.
        self.state.ended = self.parts_ended and not any(k[0] == self.run for k in self.pending)
        return fired, None

    # -- totals -------------------------------------------------------------------------

    def absorb(self, parts: list[State]) -> None:
        """Set the merged totals from the shards' committed parts of the current run."""
        mine = [p for p in parts if p.run == self.run and p.meta is not None]
        if not mine:
            return
        s = self.state
        if s.meta is None:
            s.meta = mine[0].meta
            s.samples.clear()
            s.start_curve()
        assert s.meta is not None
        s.gmv_fen = s.meta.base_gmv_fen + sum(p.gmv_fen for p in mine)
        s.orders = s.meta.base_orders + sum(p.orders for p in mine)
        for tally in TALLIES:
            for name in tally.arrays:
                setattr(s, name, np.sum([getattr(p, name) for p in mine], axis=0, dtype=np.int64))
        s.rescan_brands()  # a part may have gone back (failover): recompute the top 10
        s.gaps = sum(p.gaps for p in parts)
        s.held = sum(p.held for p in parts)
        s.duplicates = sum(p.duplicates for p in parts)
        s.dead_letters = sum(p.dead_letters for p in parts)
        newest = max(mine, key=lambda p: p.sim_time_ms)
        # The newest sample orders of all parts.
        s.recent = sorted(r for p in mine for r in p.recent)[-RECENT_ORDERS:]
        self.parts_ended = len(mine) == s.meta.shards and all(p.ended for p in mine)
        s.sample(newest.sim_time_ms)

    # -- persistence --------------------------------------------------------------------

    def dumps(self) -> bytes:
        """Everything but the merged state (stored beside it, as `State.dumps` writes)."""
        return orjson.dumps(
            {
                "run": self.run,
                "next_seq": self.next_seq,
                "prefix": [self.prefix_gmv_fen, self.prefix_orders],
                "pending": [list(row.__dict__.values()) for row in self.pending.values()],
                "retired": self.retired,
                "cursors": {str(k): v for k, v in self.cursors.items()},
                "floors": {str(k): v for k, v in self.floors.items()},
            }
        )

    @classmethod
    def loads(cls, raw: bytes, state: State) -> "Merge":
        data: dict[str, Any] = orjson.loads(raw)
        rows = [Row(*r) for r in data["pending"]]
        return cls(
            run=data["run"],
            next_seq=data["next_seq"],
            prefix_gmv_fen=data["prefix"][0],
            prefix_orders=data["prefix"][1],
            pending={(r.run, r.seq): r for r in rows},
            retired=data["retired"],
            cursors={int(k): v for k, v in data["cursors"].items()},
            floors={int(k): v for k, v in data["floors"].items()},
            state=state,
        )
