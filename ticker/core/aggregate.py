"""The aggregation reducer: `apply(state, entry)` folds one batch into the running totals.

The state is owned by one aggregator and updated in place (its arrays are large enough that
copying per batch would cost more than the batch itself); `apply` returns the milestones
the entry made fire. Everything here is exact integer arithmetic on int64 arrays.
"""

from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ticker.core import timeline
from ticker.core.batch import (
    End,
    Entry,
    Milestone,
    Orders,
    ReplayMeta,
    Start,
    next_seq_of,
    shard_of,
)
from ticker.core.clock import DAY_MS, format_time_of_day
from ticker.core.view import fired_milestone, public

TOP_N = 10
RATE_WINDOW_MS = 5_000  # rates are averaged over this much simulated time
RATE_SAMPLE_MS = 100
RECENT_ORDERS = 8  # cross-border sample orders shown per update (the page's map arcs)
# A live run's lists grow by the names its batches bring, up to these many names per
# column; later new names are tallied together as OTHER.
NAME_CAPS = {"cat": 1_000, "cty": 250, "reg": 5_000, "brd": 100_000}
OTHER = "Other"
MINUTES = DAY_MS // timeline.STEP_MS


@dataclass(frozen=True)
class Tally:
    """One dimension the state tallies orders by: a batch's index column, what one of its
    values is called, the run meta's list of their names, the State's arrays."""

    column: str
    label: str
    names: str
    arrays: tuple[str, ...]  # GMV fen, then orders (brands: GMV only)


TALLIES = (
    Tally("cat", "category", "categories", ("cat_gmv", "cat_orders")),
    Tally("cty", "country", "countries", ("cty_gmv", "cty_orders")),
    Tally("reg", "region", "regions", ("reg_gmv", "reg_orders")),
    Tally("brd", "brand", "brand_names", ("brand_gmv",)),
)
TALLY_OF = {t.column: t for t in TALLIES}


class Rejected(ValueError):
    """An entry that is well-formed but does not fit the state (goes to dead letters)."""


class Ahead(ValueError):
    """An entry of the current run beyond the next expected seq: it may not be applied
    before the missing ones (the caller holds it, see `ticker.core.hold`)."""


@dataclass(frozen=True)
class Fired:
    """A milestone and the simulated moment the order that crossed it was paid."""

    milestone: Milestone
    sim_time_ms: int

    def __str__(self) -> str:
        m = self.milestone
        return f"{m.id} ({m.label}) at {format_time_of_day(self.sim_time_ms)}"

    def to_dict(self) -> dict[str, Any]:
        """As the feed shows it (`ticker.core.view.fired_milestone`)."""
        return fired_milestone(self)


def crossings(
    milestones: list[Milestone],
    at: np.ndarray[Any, Any],
    amt: np.ndarray[Any, Any],
    gmv_before: int,
    orders_before: int,
) -> list[Fired]:
    """The milestones that these orders (in paid order, after the given totals) cross,
    each at the paid-at time of the order that crossed it, in the order they fire."""
    gmv_after, orders_after = gmv_before + int(amt.sum()), orders_before + len(amt)
    found: list[tuple[int, int, Milestone]] = []
    cum_gmv = None
    for milestone in milestones:
        if milestone.metric == "gmv_fen":
            if not gmv_before < milestone.threshold <= gmv_after:
                continue
            if cum_gmv is None:
                cum_gmv = np.cumsum(amt)
            index = int(np.searchsorted(cum_gmv, milestone.threshold - gmv_before))
        else:
            if not orders_before < milestone.threshold <= orders_after:
                continue
            index = milestone.threshold - orders_before - 1
        found.append((index, milestone.threshold, milestone))
    found.sort(key=lambda c: (c[0], c[1]))
    return [Fired(m, int(at[i])) for i, _, m in found]


def _zeros(n: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.zeros(n, dtype=np.int64)


@dataclass
class State:
    """Running totals of the current replay run."""

    run: str | None = None
    meta: ReplayMeta | None = None
    last_seq: int = -1
    gmv_fen: int = 0
    orders: int = 0
    sim_time_ms: int = 0
    ended: bool = False
    cat_gmv: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    cat_orders: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    cty_gmv: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    cty_orders: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    reg_gmv: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    reg_orders: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    brand_gmv: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    _brand_floor: int = 0  # a lower bound of the 10th brand's GMV (a cache for top_brands)
    fired: list[Fired] = field(default_factory=list)
    samples: deque[tuple[int, int, int]] = field(default_factory=deque)
    recent: list[tuple[int, int, int, int]] = field(default_factory=list)
    duplicates: int = 0
    gaps: int = 0
    dead_letters: int = 0
    # A sharded run's state holds one shard's part: it starts from zero (the merge step
    # adds the window's base once), fires no milestones (only the merged totals can), and
    # journals each entry it applies as (run, seq, orders, gmv fen, sim ms) for the merge.
    shard: int = 0
    journal: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    # The day's curve (`ticker.core.timeline`): its fixed points (the history before the
    # window, the window's start, each whole minute passed); `curve()` adds the latest.
    # A minute's point is fixed once a batch starting at or after it arrives (batches come
    # in seq order, their t0 never falls); `carry` holds, per minute still open, what
    # already-applied orders paid at or after it add (only a batch straddling the minute).
    fixed: list[list[int]] = field(default_factory=list)
    next_minute: int = 0
    carry: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Set by the consumer (see `ticker.core.hold`): entries held back now, ahead of a
    # missing seq; `gaps` counts those given up (dead-lettered) because it never came.
    held: int = 0
    folded: int = 0  # orders this process folded in (not persisted; for its log line)
    # A live run: the last seq applied per producer, and the entries given up per producer
    # because the seqs before them never came; GMV fen and orders per paid-at minute
    # (the curve is their running sum, so a late order lands in its own minute); the
    # first curve point a late order changed since the last commit (None: none).
    producers: dict[str, int] = field(default_factory=dict)
    producer_gaps: dict[str, int] = field(default_factory=dict)
    minute_gmv: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    minute_orders: np.ndarray[Any, np.dtype[np.int64]] = field(default_factory=lambda: _zeros(0))
    changed_from: int | None = None
    _name_index: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.meta is not None and self.meta.live

    @property
    def shards(self) -> int:
        return self.meta.shards if self.meta else 1

    def next_seq(self) -> int:
        """The seq of the next order batch this state expects (its shard's next one)."""
        return next_seq_of(self.shard, self.shards, self.last_seq)

    def expected_seq(self, entry: Entry) -> int:
        """The seq this state expects next of the entry's sender: in a live run, each
        producer's own next one (a live run's end follows its start: seq 1); otherwise
        the run's next."""
        if self.live and isinstance(entry, Orders):
            return self.producers.get(entry.producer, 0) + 1
        return self.next_seq()

    def last_applied(self, entry: Entry) -> int:
        """The highest seq applied of the entry's sender (a seq up to it is a repeat)."""
        if self.live and isinstance(entry, Orders):
            return self.producers.get(entry.producer, 0)
        return self.last_seq

    def sender(self, entry: Entry) -> str:
        """Who the entry's seq belongs to, for messages: a producer, or the run."""
        producer = entry.producer if isinstance(entry, Orders) else ""
        return f"producer {producer!r}" if producer else f"run {entry.run!r}"

    # -- reducer ---------------------------------------------------------------------

    def apply(self, entry: Entry) -> list[Fired]:
        """Fold one entry in; return the milestones it fired, in the order they fired.

        Raises Rejected for an entry that does not belong to the current run or whose
        indices do not fit it; the state is then unchanged.
        """
        if isinstance(entry, Start):
            if entry.run == self.run:
                self.duplicates += 1
                return []
            self._begin(entry)
            return []
        if entry.run != self.run:
            raise Rejected(
                f"entry of run {entry.run!r} but the current run is {self.run!r} "
                "(its start entry was never applied)"
            )
        if isinstance(entry, Orders) and bool(entry.producer) != self.live:
            raise Rejected(
                "a live run's batches need a producer id"
                if self.live
                else "a batch with a producer id belongs to a live run, not to a replay"
            )
        if entry.seq <= self.last_applied(entry):
            if isinstance(entry, Orders) and not self.live:  # a malformed copy is a dead
                self._check_indices(entry.cat, entry.cty, entry.reg, entry.brd)  # letter
            self.duplicates += 1
            return []
        if isinstance(entry, Orders) and shard_of(entry.seq, self.shards) != self.shard:
            raise Rejected(
                f"batch {entry.seq} belongs to shard {shard_of(entry.seq, self.shards)}, "
                f"not to shard {self.shard}"
            )
        if self.ended:
            raise Rejected(f"run {self.run!r} ended at seq {self.last_seq}; got seq {entry.seq}")
        if entry.seq > self.expected_seq(entry):
            if isinstance(entry, Orders) and not self.live:  # a malformed one is a dead
                self._check_indices(entry.cat, entry.cty, entry.reg, entry.brd)  # letter now
            raise Ahead(
                f"{self.sender(entry)}: seq {self.expected_seq(entry)} expected, got {entry.seq}"
            )
        if isinstance(entry, End):
            self._advance(entry.seq, entry.t)
            if self.live:
                self._fix_live()
            elif self.shards == 1:
                self.fix_minutes(entry.t, self.gmv_fen, self.orders)
            self.ended = True
            self._journal(entry.seq, 0, 0, entry.t)
            return []
        return self._apply_orders([entry])

    def _begin(self, start: Start) -> None:
        meta = start.meta
        # A new run starts from a fresh state; the counters of odd entries, the orders
        # this process folded and a shard's journal go on across runs.
        self._become(
            State(
                duplicates=self.duplicates,
                gaps=self.gaps,
                dead_letters=self.dead_letters,
                folded=self.folded,
                journal=self.journal,
            )
        )
        self.run, self.meta, self.last_seq, self.shard = start.run, meta, start.seq, start.shard
        sharded = meta.shards > 1
        self.gmv_fen = 0 if sharded else meta.base_gmv_fen
        self.orders = 0 if sharded else meta.base_orders
        self.sim_time_ms = meta.from_ms
        self._journal(start.seq, 0, 0, meta.from_ms)
        if not sharded:
            self.start_curve()
        self.cat_gmv, self.cat_orders = _zeros(len(meta.categories)), _zeros(len(meta.categories))
        self.cty_gmv, self.cty_orders = _zeros(len(meta.countries)), _zeros(len(meta.countries))
        self.reg_gmv, self.reg_orders = _zeros(len(meta.regions)), _zeros(len(meta.regions))
        self.brand_gmv = _zeros(meta.brands)
        self.samples.append((meta.from_ms, self.gmv_fen, self.orders))
        if meta.live:
            self.minute_gmv, self.minute_orders = _zeros(MINUTES), _zeros(MINUTES)

    def _become(self, other: "State") -> None:
        """Take every field of `other`, in place (the state's owner holds this object)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    # -- live runs ---------------------------------------------------------------------

    def _global(self, column: str, names: tuple[str, ...]) -> np.ndarray[Any, Any]:
        """The run's indices of a batch's names, adding new names to the run's list (up
        to NAME_CAPS[column]; beyond it they are tallied as OTHER)."""
        assert self.meta is not None
        known = list(self.meta.name_lists[column])
        index = self._name_index.get(column)
        if index is None:
            index = self._name_index[column] = {n: i for i, n in enumerate(known)}
        out = []
        for name in names:
            i = index.get(name)
            if i is None and len(known) >= NAME_CAPS[column]:
                i = index.get(OTHER)
                name = OTHER
            if i is None:
                i = index[name] = len(known)
                known.append(name)
            out.append(i)
        if len(known) > len(self.meta.name_lists[column]):
            self._grow(column, tuple(known))
        return np.array(out, dtype=np.int64)

    def _grow(self, column: str, names: tuple[str, ...]) -> None:
        assert self.meta is not None
        tally = TALLY_OF[column]
        extra: dict[str, Any] = {tally.names: names}
        if column == "brd":
            extra["brands"] = len(names)
        self.meta = replace(self.meta, **extra)
        for name in tally.arrays:
            old = getattr(self, name)
            setattr(self, name, np.concatenate((old, _zeros(len(names) - len(old)))))

    def _live_columns(self, batch: Orders) -> tuple[np.ndarray[Any, Any], ...]:
        """A live batch's index columns as the run's indices."""
        named = dict(batch.names)
        return tuple(
            self._global(c, named[c])[getattr(batch, c)] if c in named else getattr(batch, c)
            for c in TALLY_OF
        )

    def _curve_live(self, at: np.ndarray[Any, Any], amt: np.ndarray[Any, Any]) -> None:
        """Count orders in their paid-at minute; note the first curve point a late order
        (paid before a minute already shown) changes, so the next feed entry carries it."""
        minute = at // timeline.STEP_MS
        np.add.at(self.minute_gmv, minute, amt)
        self.minute_orders += np.bincount(minute, minlength=MINUTES)
        shown = self.fixed[-1][0] if self.fixed else 0
        if int(at.min()) < shown:
            first = (int(at.min()) // timeline.STEP_MS + 1) * timeline.STEP_MS
            self.changed_from = min(first, self.changed_from or first)
        self._fix_live()

    def _fix_live(self) -> None:
        """A live run's fixed points: 00:00, then every whole minute the clock has passed,
        each the exact totals of the orders paid before it (of those received so far)."""
        assert self.meta is not None
        minutes = min(self.sim_time_ms // timeline.STEP_MS, MINUTES)
        gmv = np.cumsum(self.minute_gmv[:minutes]) + self.meta.base_gmv_fen
        orders = np.cumsum(self.minute_orders[:minutes]) + self.meta.base_orders
        self.fixed = [[self.meta.from_ms, self.meta.base_gmv_fen, self.meta.base_orders]]
        self.fixed += [
            [(m + 1) * timeline.STEP_MS, int(g), int(o)]
            for m, (g, o) in enumerate(zip(gmv.tolist(), orders.tolist(), strict=True))
        ]

    def start_curve(self) -> None:
        """The curve of a new run: the day before the window, then the window's start."""
        assert self.meta is not None
        from_ms = self.meta.from_ms
        self.fixed = [list(p) for p in self.meta.history if p[0] < from_ms]
        self.fixed.append([from_ms, self.meta.base_gmv_fen, self.meta.base_orders])
        self.next_minute = (from_ms // timeline.STEP_MS + 1) * timeline.STEP_MS
        self.carry = {}

    def fix_minutes(self, upto_ms: int, gmv_fen: int, orders: int) -> None:
        """Fix every open minute <= `upto_ms` at these totals (less what each minute's
        carry says was paid at or after it): nothing paid before them can come any more."""
        while self.next_minute <= upto_ms:
            g, o = self.carry.pop(self.next_minute, (0, 0))
            self.fixed.append([self.next_minute, gmv_fen - g, orders - o])
            self.next_minute += timeline.STEP_MS

    def _curve_orders(
        self,
        batches: list[Orders],
        at: np.ndarray[Any, Any],
        amt: np.ndarray[Any, Any],
        gmv_before: int,
        orders_before: int,
    ) -> None:
        """Fix the minutes these batches (in seq order) show to be over, exactly."""
        top = int(at.max())
        if self.next_minute > top:
            return
        t0s = np.array([b.t0 for b in batches], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum([b.n for b in batches])))
        cum_gmv = np.concatenate(([0], np.cumsum(amt)))
        while self.next_minute <= top:
            m = self.next_minute
            later = np.flatnonzero(t0s >= m)
            if not len(later):
                break
            off = int(starts[int(later[0])])
            # Orders before that batch but paid at or after m (a batch straddling m).
            over = at[:off] >= m
            g = int(cum_gmv[off]) - int(amt[:off][over].sum())
            self.fix_minutes(m, gmv_before + g, orders_before + off - int(over.sum()))
        for m in range(self.next_minute, top + 1, timeline.STEP_MS):
            over = at >= m
            g, o = self.carry.get(m, (0, 0))
            self.carry[m] = (g + int(amt[over].sum()), o + int(over.sum()))

    def curve(self) -> list[list[int]]:
        """The full curve: the fixed points, then the latest (when later than them)."""
        out = [list(p) for p in self.fixed]
        if self.meta is not None and (not out or self.sim_time_ms > out[-1][0]):
            out.append([self.sim_time_ms, self.gmv_fen, self.orders])
        return out

    def _journal(self, seq: int, orders: int, gmv_fen: int, sim_ms: int) -> None:
        if self.shards > 1 and self.run is not None:
            self.journal.append((self.run, seq, orders, gmv_fen, sim_ms))

    def _advance(self, seq: int, sim_time_ms: int) -> None:
        self.last_seq = seq
        self.sample(sim_time_ms)

    def sample(self, sim_time_ms: int) -> None:
        """Move the simulated clock on; keep a rate sample each RATE_SAMPLE_MS."""
        self.sim_time_ms = max(self.sim_time_ms, sim_time_ms)
        if not self.samples:
            self.samples.append((self.sim_time_ms, self.gmv_fen, self.orders))
        elif self.sim_time_ms - self.samples[-1][0] >= RATE_SAMPLE_MS:
            self.samples.append((self.sim_time_ms, self.gmv_fen, self.orders))
            while len(self.samples) > 2 and self.samples[1][0] <= self.sim_time_ms - RATE_WINDOW_MS:
                self.samples.popleft()

    def apply_many(
        self, entries: list[Entry]
    ) -> tuple[list[Fired], list[tuple[int, str]], list[int]]:
        """Fold entries in, in order, as `apply` would one by one, but fold each run of
        consecutive order batches with one set of vector operations (the per-call cost of
        numpy, not the orders, dominates small batches).

        Returns the milestones fired, the (index, reason) of each rejected entry, and the
        index of each entry left out because it is ahead of a missing seq (`Ahead`).
        """
        fired: list[Fired] = []
        rejected: list[tuple[int, str]] = []
        ahead: list[int] = []
        group: list[Orders] = []
        newest = self.last_seq
        pending: dict[str, int] = {}  # a live run: each producer's newest seq in the group
        for i, entry in enumerate(entries):
            if (
                isinstance(entry, Orders)
                and entry.run == self.run
                and not self.ended
                and not self.live
                and entry.seq == next_seq_of(self.shard, self.shards, newest)
            ):
                group.append(entry)
                newest = entry.seq
                continue
            if (
                isinstance(entry, Orders)
                and entry.run == self.run
                and self.live
                and not self.ended
                and entry.producer
                and entry.seq
                == pending.get(entry.producer, self.producers.get(entry.producer, 0)) + 1
            ):
                group.append(entry)
                pending[entry.producer] = entry.seq
                continue
            fired += self._apply_group(group, rejected, ahead, i - len(group))
            group = []
            pending = {}
            try:
                fired += self.apply(entry)
            except Ahead:
                ahead.append(i)
            except Rejected as exc:
                rejected.append((i, str(exc)))
            newest = self.last_seq
        fired += self._apply_group(group, rejected, ahead, len(entries) - len(group))
        return fired, rejected, sorted(ahead)

    def _apply_group(
        self,
        group: list[Orders],
        rejected: list[tuple[int, str]],
        ahead: list[int],
        first_index: int,
    ) -> list[Fired]:
        if not group:
            return []
        try:
            return self._apply_orders(group)
        except Rejected:
            pass  # find the culprits one batch at a time
        fired: list[Fired] = []
        for i, batch in enumerate(group):
            try:
                fired += self.apply(batch)
            except Ahead:
                ahead.append(first_index + i)  # behind a culprit: it is missing now
            except Rejected as exc:
                rejected.append((first_index + i, str(exc)))
        return fired

    def _apply_orders(self, batches: list[Orders]) -> list[Fired]:
        """Fold consecutive batches of the current run (seqs rising) in at once."""
        assert self.meta is not None
        if self.live:
            mapped = [self._live_columns(b) for b in batches]
            at, amt = (np.concatenate([getattr(b, n) for b in batches]) for n in ("at", "amt"))
            cat, cty, reg, brd = (np.concatenate([m[k] for m in mapped]) for k in range(4))
        elif len(batches) == 1:
            b = batches[0]
            at, amt, cat, cty, reg, brd = b.at, b.amt, b.cat, b.cty, b.reg, b.brd
        else:
            at, amt, cat, cty, reg, brd = (
                np.concatenate([getattr(b, name) for b in batches])
                for name in ("at", "amt", "cat", "cty", "reg", "brd")
            )
        self._check_indices(cat, cty, reg, brd)
        amt = amt.astype(np.int64, copy=False)
        gmv_before, orders_before = self.gmv_fen, self.orders
        self.gmv_fen += int(amt.sum())
        self.orders += len(amt)
        self.folded += len(amt)
        np.add.at(self.cat_gmv, cat, amt)
        self.cat_orders += np.bincount(cat, minlength=len(self.cat_orders))
        np.add.at(self.cty_gmv, cty, amt)
        self.cty_orders += np.bincount(cty, minlength=len(self.cty_orders))
        np.add.at(self.reg_gmv, reg, amt)
        self.reg_orders += np.bincount(reg, minlength=len(self.reg_orders))
        np.add.at(self.brand_gmv, brd, amt)
        fired: list[Fired] = []
        if self.meta.shards == 1:  # a shard's part crosses nothing: the merge step fires
            done = {f.milestone.id for f in self.fired}
            pending = [m for m in self.meta.milestones if m.id not in done]
            fired = crossings(pending, at, amt, gmv_before, orders_before)
            self.fired.extend(fired)
        if self.live:
            for b in batches:
                self.producers[b.producer] = b.seq
            self.sample(int(at.max()))  # the clock: the latest paid-at seen
            self._curve_live(at, amt)
        elif self.meta.shards == 1:
            self._curve_orders(batches, at, amt, gmv_before, orders_before)
        cross_border = np.flatnonzero(cty)[-RECENT_ORDERS:]
        newest = [(int(at[i]), int(amt[i]), int(cty[i]), int(reg[i])) for i in cross_border]
        # The newest across batches: one without cross-border orders keeps the last ones.
        self.recent = (self.recent + newest)[-RECENT_ORDERS:]
        if self.live:
            return fired
        for b in batches:
            self.last_seq = b.seq
            if self.shards > 1:
                self._journal(b.seq, b.n, int(b.amt.sum()), b.t1)
        self._advance(batches[-1].seq, max(b.t1 for b in batches))
        return fired

    def _check_indices(
        self,
        cat: np.ndarray[Any, Any],
        cty: np.ndarray[Any, Any],
        reg: np.ndarray[Any, Any],
        brd: np.ndarray[Any, Any],
    ) -> None:
        for tally, column in zip(TALLIES, (cat, cty, reg, brd), strict=True):
            size = len(getattr(self, tally.arrays[0]))
            if int(column.max()) >= size:
                raise Rejected(
                    f"{tally.label} index {int(column.max())} is out of range (the run has {size})"
                )

    # -- views -------------------------------------------------------------------------

    def rates(self) -> tuple[int, int]:
        """GMV fen and orders per simulated second over the trailing window."""
        if len(self.samples) < 2:
            return 0, 0
        t0, g0, o0 = self.samples[0]
        t1, g1, o1 = self.samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0, 0
        return (g1 - g0) * 1000 // span, (o1 - o0) * 1000 // span

    def top(
        self,
        names: tuple[str, ...],
        gmv: np.ndarray[Any, Any],
        orders: np.ndarray[Any, Any],
        skip_first: bool = False,
    ) -> list[dict[str, Any]]:
        """The 10 names with the most GMV, largest first (`skip_first`: not the home one)."""
        first = 1 if skip_first else 0
        order = np.argsort(-gmv[first:], kind="stable")[:TOP_N] + first
        return [
            {"name": names[i], "gmv_fen": int(gmv[i]), "orders": int(orders[i])}
            for i in order
            if gmv[i] > 0
        ]

    def regions_abroad(self) -> int | None:
        """How many buyer regions outside the home market have ordered (None: the run
        does not say which regions are the home market's)."""
        if self.meta is None or not self.meta.home_regions:
            return None
        return int(np.count_nonzero(self.reg_orders[self.meta.home_regions :]))

    def brands_over_line(self) -> int:
        """How many brands' GMV is above the run's brand line (RMB 100m, scaled)."""
        if self.meta is None or not self.meta.brand_line_fen:
            return 0
        return int(np.count_nonzero(self.brand_gmv > self.meta.brand_line_fen))

    def rescan_brands(self) -> None:
        """The brand tally was replaced, not only grown (e.g. summed again from parts, one
        of which may have gone back): the next `top_brands` scans every brand."""
        self._brand_floor = 0

    def top_brands(self) -> list[dict[str, Any]]:
        """The 10 brands with the most GMV, largest first, named where the profile names them."""
        gmv = self.brand_gmv
        if self.meta is None or not len(gmv):
            return []
        # Tallies only grow, so today's top 10 are all at or above the last 10th value:
        # a linear scan for those is far cheaper than partitioning all ~180,000 brands.
        candidates = np.flatnonzero(gmv >= self._brand_floor)
        if len(candidates) > TOP_N:
            part = np.argpartition(-gmv[candidates], TOP_N - 1)[:TOP_N]
            candidates = candidates[part]
        head = candidates[np.lexsort((candidates, -gmv[candidates]))]
        if len(head) == TOP_N:
            self._brand_floor = int(gmv[head[-1]])
        names = self.meta.brand_names
        return [
            {
                "id": int(i),
                "name": names[i] if i < len(names) else f"Brand {i}",
                "gmv_fen": int(gmv[i]),
            }
            for i in head
            if gmv[i] > 0
        ]

    def view(self) -> dict[str, Any]:
        """The public state, as the feed and /api/state show it (`ticker.core.view`)."""
        return public(self)

    # -- persistence (`ticker.core.codec`, which imports this module) -----------------

    def brand_blob(self) -> bytes:
        """The brand tally as packed bytes, stored beside the JSON state."""
        from ticker.core import codec

        return codec.pack(self.brand_gmv)

    def dumps(self) -> bytes:
        """Serialise everything but the brand tally (`brand_blob`) to resume exactly."""
        from ticker.core import codec

        return codec.dumps(self)

    @classmethod
    def loads(cls, raw: bytes, brand_blob: bytes | None = None) -> "State":
        """The state `dumps` and `brand_blob` wrote (no blob: brand tallies of zero)."""
        from ticker.core import codec

        return codec.loads(raw, brand_blob)
