"""Paid orders of a festival day, generated deterministically in columnar batches.

The day is cut into 100 ms slots. The cumulative curves fix, for every slot, exactly how
many orders are paid in it and exactly how many fen they add up to; the random draws only
decide how those fen are spread over the orders and what each order is (time within the
slot, category, seller country, buyer region, brand). So the totals of any window are exact
whatever the seed, and the same (profile, seed, scale, window, batch size) always gives
byte-identical batches. Random numbers come from one generator per block (a second of the
day, a minute on a miniature day), seeded from (seed, block), so a replay can start or
resume at any batch, and blocks can be generated in any order or in parallel
(`simulator.ahead`).

Quiet slots are coalesced: a batch holds the orders of consecutive slots of one block, up
to `batch_size` (a slot is split only when it holds more). So a miniature day is a few
entries a minute rather than one a second, and its cost is its orders, not its batches;
the per-slot totals, each order's paid-at time and so every milestone are unchanged.
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from simulator import brands
from simulator.curve import Curve
from simulator.profile import Profile, Weighted
from ticker.core.batch import COLUMNS, Milestone, Orders, ReplayMeta
from ticker.core.clock import DAY_MS
from ticker.core.timeline import STEP_MS

SLOT_MS = 100  # at full scale; a miniature day uses longer slots (see `slot_ms_for`)
MIN_ORDER_FEN = 100  # no paid order below RMB 1
DEFAULT_BATCH = 4_000
BRAND_LOOKUP_BITS = 19  # a 512k-entry guide table for ~180,000 brands
# A piece of work is consecutive blocks holding at least this many orders (one block at
# full scale, about an hour of a 1/1000 day). A quiet block's own draws cost ~0.05 ms;
# what follows them (paid-at times, amounts, picks, the cut into batches) is done once a
# piece (`DayPlan.piece_batches`), as is handing it to the writer (`simulator.ahead`).
PIECE_ORDERS = 50_000

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Batch:
    """One stream entry's worth of orders."""

    seq: int
    t0: int
    t1: int
    columns: dict[str, npt.NDArray[Any]]

    @property
    def n(self) -> int:
        return len(self.columns["amt"])

    def as_orders(self, run: str) -> Orders:
        """The decoded entry this batch becomes, without the round trip through bytes."""
        c = self.columns
        return Orders(
            run,
            self.seq,
            self.t0,
            self.t1,
            c["at"],
            c["amt"],
            c["cat"],
            c["cty"],
            c["reg"],
            c["brd"],
        )


def _probabilities(rows: tuple[Weighted, ...]) -> npt.NDArray[np.float64]:
    weights: npt.NDArray[np.float64] = np.array([r.weight for r in rows], dtype=np.float64)
    weights /= weights.sum()
    return weights


class DayPlan:
    """How many orders and fen each slot of a window carries, and their batch numbers."""

    def __init__(
        self,
        profile: Profile,
        scale: Fraction,
        from_ms: int,
        to_ms: int,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH,
        coalesce: bool = True,
    ) -> None:
        """`coalesce=False` gives every slot its own batches (for comparison only: a
        replay's batches, and so `ticker verify`, are always coalesced)."""
        self.profile, self.scale, self.seed, self.batch_size = profile, scale, seed, batch_size
        self.from_ms, self.to_ms = from_ms, to_ms
        self.slot_ms, self.block_ms = slot_ms_for(scale)
        self.gmv = Curve(
            [(p.at_ms, p.value) for p in profile.gmv_points], profile.final_gmv_fen, scale
        )
        self.orders = Curve(
            [(p.at_ms, p.value) for p in profile.order_points], profile.final_orders, scale
        )
        first, last = from_ms // self.slot_ms, -(-to_ms // self.slot_ms)
        edges = np.arange(first, last + 1, dtype=np.int64) * self.slot_ms
        edges[0], edges[-1] = from_ms, to_ms
        self.edges = edges
        cum_orders, cum_gmv = self.orders(edges), self.gmv(edges)
        self.cum_orders: Int64Array = cum_orders
        self.base_orders, self.base_gmv = int(cum_orders[0]), int(cum_gmv[0])
        self.slot_orders: Int64Array = np.diff(cum_orders)
        self.slot_gmv = _gmv_where_orders_are(self.slot_orders, cum_gmv)
        too_small = self.slot_gmv < self.slot_orders * 1
        if too_small.any():
            raise ValueError(
                "the profile's curves give a slot whose orders average below "
                "1 fen; check the gmv and orders points"
            )
        self._group(batch_size, coalesce)
        self.cat = Lookup(_probabilities(profile.categories))
        self.intl = Lookup(_probabilities(profile.countries[1:]))
        self.reg = Lookup(_probabilities(profile.regions))
        share = Fraction(profile.international_share)
        self.intl_num, self.intl_den = share.numerator, share.denominator
        try:
            brand_p = brands.shares(profile.brands, profile.brands_over_100m, profile.final_gmv_fen)
        except ValueError as exc:
            raise ValueError(f"{profile.name}: {exc}") from None
        self.brand = Lookup(brand_p, BRAND_LOOKUP_BITS)
        self._history: tuple[tuple[int, int, int], ...] | None = None

    def _group(self, size: int, coalesce: bool) -> None:
        """Cut each block's slots into groups, and number every group's batches.

        A group is the slots of one block whose first order falls in the same `size` orders
        of that block: a run of quiet slots becomes one group (one batch), a slot of more
        than `size` orders is a group of its own, cut into `size`-order batches as it always
        was. Seq 0 is the start entry; the orders batches follow from 1."""
        n_slots = len(self.slot_orders)
        self.cum = self.cum_orders - self.cum_orders[0]  # window orders before each edge
        new_block = np.ones(n_slots, dtype=bool)
        new_block[1:] = np.diff(self.edges[:-1] // self.block_ms) != 0
        self.block_first_slot: Int64Array = np.append(np.flatnonzero(new_block), n_slots)
        block_of_slot = np.cumsum(new_block) - 1
        within = self.cum[:-1] - self.cum[self.block_first_slot[:-1]][block_of_slot]
        key = within // size if coalesce else np.arange(n_slots)
        new_group = new_block.copy()
        new_group[1:] |= np.diff(key) != 0
        start = np.flatnonzero(new_group)
        self.group_slots: Int64Array = np.append(start, n_slots)
        self.group_block: Int64Array = block_of_slot[start]
        self.group_orders: Int64Array = self.cum[self.group_slots[1:]] - self.cum[start]
        self.group_end_seq: Int64Array = 1 + np.cumsum(-(-self.group_orders // size))
        self.last_orders_seq = int(self.group_end_seq[-1]) - 1
        self.end_seq = self.last_orders_seq + 1

    @property
    def blocks(self) -> int:
        """How many blocks (random generators) the window touches."""
        return len(self.block_first_slot) - 1

    @property
    def total_orders(self) -> int:
        return int(self.slot_orders.sum())

    @property
    def total_gmv(self) -> int:
        return int(self.slot_gmv.sum())

    def meta(self) -> ReplayMeta:
        """The start entry's description of this replay, thresholds scaled."""
        p, scale = self.profile, self.scale
        return ReplayMeta(
            profile=p.name,
            title=p.title,
            scale=str(scale.numerator / scale.denominator)
            if scale.denominator != 1
            else str(scale.numerator),
            from_ms=self.from_ms,
            to_ms=self.to_ms,
            base_gmv_fen=self.base_gmv,
            base_orders=self.base_orders,
            last_year_gmv_fen=int(p.last_year_gmv_fen * scale),
            categories=tuple(c.name for c in p.categories),
            countries=tuple(c.name for c in p.countries),
            regions=tuple(r.name for r in p.regions),
            brands=p.brands,
            brand_names=p.named_brands,
            brand_line_fen=brands.LINE_FEN * scale.numerator // scale.denominator
            if p.brands_over_100m
            else 0,
            usd_rate=str(p.usd_rate),
            seed=self.seed,
            batch_size=self.batch_size,
            last_year_points=tuple(
                (t, v * scale.numerator // scale.denominator)
                for t, v in [(0, 0)]
                + [(q.at_ms, q.value) for q in p.last_year_points]
                + [(DAY_MS, p.last_year_gmv_fen)]
            ),
            history=self.history(),
            home_regions=p.home_regions,
            milestones=tuple(
                Milestone(
                    id=m.id,
                    label=m.label,
                    metric="gmv_fen" if m.metric == "gmv" else "orders",
                    threshold=max(1, int(m.threshold * (100 if m.metric == "gmv" else 1) * scale)),
                    documented=m.documented,
                )
                for m in p.milestones
            ),
        )

    def history(self) -> tuple[tuple[int, int, int], ...]:
        """The day before the window: (ms, GMV fen, orders) at each whole minute before
        from_ms, exactly as a replay from 00:00 (to the same to_ms) has folded them there.

        Computed from the per-slot totals of that replay, without generating an order: its
        orders at a minute are the orders curve there; its GMV is the GMV curve at the end of
        the last slot with orders (`_gmv_where_orders_are` moves a slot's fen along to the
        next slot with orders); past that replay's last slot with orders, which carries the
        rest of its window, the GMV curve at to_ms."""
        if self._history is None:
            self._history = self._compute_history()
        return self._history

    def _compute_history(self) -> tuple[tuple[int, int, int], ...]:
        minutes = np.arange(0, self.from_ms, STEP_MS, dtype=np.int64)
        if not len(minutes):
            return ()
        edges = np.arange(0, int(minutes[-1]) + 1, self.slot_ms, dtype=np.int64)
        cum_orders = self.orders(edges)
        # Index of the edge ending the last slot with orders, at or before each edge.
        grew = np.concatenate(([False], np.diff(cum_orders) > 0))
        last_end = np.maximum.accumulate(np.where(grew, np.arange(len(edges)), 0))
        at = minutes // self.slot_ms
        gmv_at = self.gmv(edges[last_end[at]])
        last = int(np.flatnonzero(grew)[-1]) if grew.any() else -1
        if last >= 0 and int(self.orders(np.array([self.to_ms]))[0]) == int(cum_orders[last]):
            # That replay has no order after this slot: its last slot with orders carries
            # the GMV up to to_ms.
            at_end = int(self.gmv(np.array([self.to_ms]))[0])
            gmv_at = np.where(last_end[at] == last, at_end, gmv_at)
        return tuple(
            (int(t), int(g), int(o))
            for t, g, o in zip(minutes, gmv_at, cum_orders[at], strict=True)
        )

    def _locate(self, seq: int) -> tuple[int, int]:
        """(window orders before orders batch `seq`, orders in it)."""
        if not 1 <= seq <= self.last_orders_seq:
            raise ValueError(f"no orders batch {seq} (they are 1..{self.last_orders_seq})")
        g = int(np.searchsorted(self.group_end_seq, seq, side="right"))
        first_seq = int(self.group_end_seq[g]) - int(-(-self.group_orders[g] // self.batch_size))
        offset = (seq - first_seq) * self.batch_size
        n = min(self.batch_size, int(self.group_orders[g]) - offset)
        return int(self.cum[self.group_slots[g]]) + offset, n

    def block_of_seq(self, seq: int) -> int:
        """The block (0 = the window's first) that generates orders batch `seq`."""
        before, _ = self._locate(seq)
        slot = int(np.searchsorted(self.cum, before, side="right")) - 1
        return int(np.searchsorted(self.block_first_slot, slot, side="right")) - 1

    def end_of_seq(self, seq: int) -> int:
        """The simulated ms at which orders batch `seq` ends (its last slot's end)."""
        before, n = self._locate(seq)
        return int(self.edges[np.searchsorted(self.cum, before + n - 1, side="right")])

    def upto(self, seq: int) -> tuple[int, int | None]:
        """(orders, GMV fen) from midnight once batches 1..seq are applied. The GMV is
        fixed per slot, not per batch, so it is None when batch `seq` ends inside a slot."""
        if seq < 1:
            return self.base_orders, self.base_gmv
        before, n = self._locate(min(seq, self.last_orders_seq))
        done = before + n
        slot = int(np.searchsorted(self.cum, done, side="left"))
        if self.cum[slot] != done:
            return self.base_orders + done, None
        return self.base_orders + done, self.base_gmv + int(self.slot_gmv[:slot].sum())

    def pieces(self, first: int = 0) -> list[range]:
        """The blocks from `first` on, cut into pieces of work of >= PIECE_ORDERS orders
        (one block at full scale, about an hour of a 1/1000 day)."""
        before = self.cum[self.block_first_slot[first:-1]] // PIECE_ORDERS
        cuts = [first, *(first + 1 + np.flatnonzero(np.diff(before) != 0)).tolist(), self.blocks]
        return [range(a, b) for a, b in itertools.pairwise(cuts) if b > a]

    def batches(self, after_seq: int = 0) -> Iterator[Batch]:
        """Every orders batch with a seq above `after_seq`, in order."""
        if after_seq >= self.last_orders_seq:
            return
        for piece in self.pieces(self.block_of_seq(after_seq + 1)):
            yield from self.piece_batches(piece, after_seq)

    def piece_batches(self, blocks: range, after_seq: int = 0) -> list[Batch]:
        """The batches of consecutive blocks with a seq above `after_seq`.

        Each block's orders are all drawn (for determinism) from its own generator, in the
        same order of draws whatever the piece; everything after the draws is done once for
        the piece, so a quiet block costs its draws, not some forty numpy calls of its own."""
        s0, s1 = int(self.block_first_slot[blocks.start]), int(self.block_first_slot[blocks.stop])
        total = int(self.cum[s1] - self.cum[s0])
        if total == 0:
            return []
        columns = self._columns(blocks, s0, s1, total)
        # The piece's batches: each group's orders cut into batch_size pieces.
        g0, g1 = np.searchsorted(self.group_block, [blocks.start, blocks.stop])
        sizes = self.group_orders[g0:g1]
        per_group = -(-sizes // self.batch_size)
        if not per_group.sum():
            return []
        group = np.repeat(np.arange(g0, g1), per_group)
        nth = np.arange(len(group)) - np.repeat(np.cumsum(per_group) - per_group, per_group)
        a = self.cum[self.group_slots[group]] - self.cum[s0] + nth * self.batch_size
        b = np.minimum(a + self.batch_size, self.cum[self.group_slots[group + 1]] - self.cum[s0])
        local = self.cum[s0 : s1 + 1] - self.cum[s0]
        edges = self.edges[s0 : s1 + 1]
        t0 = edges[np.searchsorted(local, a, side="right") - 1]
        t1 = edges[np.searchsorted(local, b - 1, side="right")]
        seq = self.group_end_seq[group] - per_group[group - g0] + nth
        out = []
        for q, x0, x1, lo, hi in zip(
            seq.tolist(), t0.tolist(), t1.tolist(), a.tolist(), b.tolist(), strict=True
        ):
            if q > after_seq:
                out.append(Batch(q, x0, x1, {k: v[lo:hi] for k, v in columns.items()}))
        return out

    def _columns(self, blocks: range, s0: int, s1: int, total: int) -> dict[str, npt.NDArray[Any]]:
        """The orders of slots s0..s1 (whole blocks): each block's draws, then the columns."""
        counts = self.slot_orders[s0:s1]
        edges = self.edges[s0 : s1 + 1]
        lengths = np.diff(edges)
        firsts = self.block_first_slot[blocks.start : blocks.stop + 1]
        busy = np.add.reduceat(counts >= DENSE_PER_MS * lengths, firsts[:-1] - s0) > 0
        alone = len(blocks) == 1
        draws = [
            self._block_draws(k, int(a), int(b), bool(dense), alone)
            for k, a, b, dense in zip(blocks, firsts[:-1], firsts[1:], busy, strict=True)
            if self.cum[b] > self.cum[a]
        ]
        # Paid-at times: the quiet blocks' orders at once (their spans do not overlap, so
        # one sort is each block's sort, one after the other), spliced with the busy ones'.
        quiet = [d for d in draws if d.at is None]
        parts: list[npt.NDArray[np.uint32]] = [d.at for d in draws if d.at is not None]
        if quiet:
            in_quiet = np.repeat(~busy, np.diff(firsts))
            slot_of = np.repeat(np.arange(s1 - s0), np.where(in_quiet, counts, 0))
            u = _join([d.u_at for d in quiet if d.u_at is not None])
            ms = edges[slot_of] + (u * lengths[slot_of]).astype(np.int64)
            sorted_at = ms.astype(COLUMNS["at"])  # (times of day fit; half the bytes to sort)
            sorted_at.sort()
            if len(quiet) == len(draws):
                parts = [sorted_at]
            else:
                split = iter(np.split(sorted_at, np.cumsum([d.n for d in quiet])[:-1]))
                parts = [next(split) if d.at is None else d.at for d in draws]
        if alone:
            amt = draws[0].amt
        else:
            slot_of_order = np.repeat(np.arange(s1 - s0), counts)
            normal = _join([d.amt for d in draws])
            amt = self._amounts(normal, counts, self.slot_gmv[s0:s1], slot_of_order, total)
        intl, brd, cat, reg = (
            _join([d.picks[i] for d in draws])
            if alone
            else self._pick(i, _join([d.picks[i] for d in draws]))
            for i in range(4)
        )
        cty = np.zeros(total, dtype=COLUMNS["cty"])
        cty[_join([d.is_intl for d in draws])] = intl
        return {"at": _join(parts), "amt": amt, "cat": cat, "cty": cty, "reg": reg, "brd": brd}

    def _pick(self, i: int, u: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
        """What the last draws pick, in their column's type: i = 0 the international
        orders' countries (1 and on: 0 is home), then every order's brand, category and
        region."""
        if i == 0:
            return (self.intl.draw(u) + 1).astype(COLUMNS["cty"])
        if i == 1:
            brd = np.minimum(self.brand.draw(u), self.profile.brands - 1)
            return brd.astype(COLUMNS["brd"])
        lookup, column = (self.cat, "cat") if i == 2 else (self.reg, "reg")
        return lookup.draw(u).astype(COLUMNS[column])

    def _block_draws(self, block: int, s0: int, s1: int, busy: bool, alone: bool) -> "_Draws":
        """Every random number one block's orders need, from its own generator, in order.
        A block made `alone` (a piece of one: full scale) uses each draw at once, while it
        is in the cache (a second of the peak draws ~20 MB), in amounts and picks."""
        seed = np.random.SeedSequence([self.seed, int(self.edges[s0]) // self.block_ms])
        rng = np.random.Generator(np.random.PCG64(seed))
        n = int(self.cum[s1] - self.cum[s0])
        at = u_at = None
        if busy:
            at = _paid_at(rng, self.edges[s0 : s1 + 1], self.slot_orders[s0:s1], n)
        else:
            u_at = rng.random(n)  # an order's ms within its slot (see `_paid_at`)
        amt: npt.NDArray[Any] = rng.standard_normal(n, dtype=np.float32)  # amounts' weights
        if alone:
            counts = self.slot_orders[s0:s1]
            slot_of_order = np.repeat(np.arange(s1 - s0), counts)
            amt = self._amounts(amt, counts, self.slot_gmv[s0:s1], slot_of_order, n)
        # International orders: exactly floor(share * cumulative orders) by the end of
        # every block, counted from midnight, so the day's split is exact. Each order is
        # international with the block's exact share, then the few too many (or too few)
        # are turned back at random so the count is exact.
        before, after = int(self.cum_orders[s0]), int(self.cum_orders[s1])
        intl = (after * self.intl_num) // self.intl_den - (before * self.intl_num) // self.intl_den
        is_intl = rng.random(n) * n < intl
        extra = int(np.count_nonzero(is_intl)) - intl
        if extra:
            pool = np.flatnonzero(is_intl if extra > 0 else ~is_intl)
            is_intl[rng.choice(pool, abs(extra), replace=False)] = extra < 0
        # Then, one after the other, the uniforms of each `_pick`.
        sizes = (intl, n, n, n)
        if alone:
            picks = [self._pick(i, rng.random(k)) for i, k in enumerate(sizes)]
        else:
            u = rng.random(intl + 3 * n)
            picks = np.split(u, np.cumsum(sizes[:-1]).tolist())
        return _Draws(n, at, u_at, amt, is_intl, picks)

    @staticmethod
    def _amounts(
        normal: npt.NDArray[np.float32],
        counts: Int64Array,
        gmv: Int64Array,
        slot_of_order: Int64Array,
        total: int,
    ) -> Int64Array:
        """Realistic order values that add up to each slot's GMV exactly, in fen."""
        # Log-normal weights (median ~ mean / 1.5) as whole numbers, so the split is exact.
        weights = (np.exp(normal * np.float32(0.9)) * 10_000).astype(np.int64) + 1
        floor_fen = np.minimum(MIN_ORDER_FEN, gmv // np.maximum(counts, 1))
        spread = gmv - counts * floor_fen
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        nonempty = counts > 0
        weight_sums = np.zeros(len(counts), dtype=np.int64)
        weight_sums[nonempty] = np.add.reduceat(weights, starts[nonempty])
        share = spread[slot_of_order]
        amt = floor_fen[slot_of_order] + (weights * share) // weight_sums[slot_of_order]
        # Hand out the fen lost to rounding, one each to the first orders of the slot.
        given = np.zeros(len(counts), dtype=np.int64)
        given[nonempty] = np.add.reduceat(amt, starts[nonempty])
        missing = gmv - given
        position = np.arange(total) - starts[slot_of_order]
        amt += position < missing[slot_of_order]
        result: Int64Array = amt.astype(np.int64, copy=False)
        return result


class _Draws(NamedTuple):
    """One block's random numbers (`DayPlan._block_draws`), for its `n` orders."""

    n: int
    at: npt.NDArray[np.uint32] | None  # paid-at times, made at once if a slot is busy
    u_at: npt.NDArray[np.float64] | None  # else a uniform per order, for its ms in its slot
    amt: npt.NDArray[Any]  # the amounts' weights as normal draws, or (made alone) the amounts
    is_intl: npt.NDArray[np.bool_]
    picks: list[npt.NDArray[Any]]  # per `_pick`: its uniforms, or what they pick


def _join(arrays: list[Any]) -> Any:
    """The arrays end to end (the one array itself, without a copy, if there is one)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


class Lookup:
    """Draws from a discrete distribution by table lookup: a guide table maps the top bits
    of a uniform draw to the first outcome it can be, then a few steps along the CDF find
    the outcome, exactly what a binary search of the CDF would (inverse transform)."""

    def __init__(self, p: npt.NDArray[np.float64], bits: int | None = None) -> None:
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        self.cdf = cdf
        if bits is None:
            bits = max(8, min(20, int(len(p) * 4).bit_length()))
        self.size = 1 << bits
        # guide[j] = how many outcomes have cdf <= j / size (a binary search of the CDF at
        # each j / size), counted in one pass: cdf <= j / size exactly when
        # ceil(cdf * size) <= j, as multiplying by a power of two is exact.
        first = np.minimum(np.ceil(cdf * self.size).astype(np.int64), self.size)
        self.guide = np.cumsum(np.bincount(first, minlength=self.size + 1))[: self.size]

    def draw(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """The outcome of each uniform draw in [0, 1): the first i with u < cdf[i]."""
        idx = self.guide[(u * self.size).astype(np.intp)]
        todo = np.flatnonzero(self.cdf[idx] <= u)
        while len(todo):
            idx[todo] += 1
            todo = todo[self.cdf[idx[todo]] <= u[todo]]
        return idx


# Denser than this many orders a ms, a slot's paid-at times are drawn as counts per ms.
DENSE_PER_MS = 8


def _paid_at(
    rng: np.random.Generator, edges: Int64Array, counts: Int64Array, total: int
) -> npt.NDArray[np.uint32]:
    """Each slot's orders paid at uniform random ms within it, in time order (so in slot
    order): a busy slot draws how many orders fall in each of its ms (a multinomial, no
    sort); a quiet one draws each order's ms and sorts them."""
    e0, span = int(edges[0]), int(edges[-1] - edges[0])
    lengths = np.diff(edges)
    dense = counts >= DENSE_PER_MS * lengths
    sparse = np.flatnonzero(~dense & (counts > 0))
    offsets = edges[:-1] - e0
    if len(sparse):
        slot_of = np.repeat(sparse, counts[sparse])
        ms = offsets[slot_of] + (rng.random(len(slot_of)) * lengths[slot_of]).astype(np.int64)
    if not dense.any():
        ms.sort()
        return (ms + e0).astype(COLUMNS["at"])
    per_ms = np.bincount(ms, minlength=span) if len(sparse) else np.zeros(span, dtype=np.int64)
    for length in np.unique(lengths[dense]).tolist():
        idx = np.flatnonzero(dense & (lengths == length))
        rows = rng.multinomial(counts[idx], np.full(length, 1.0 / length))
        per_ms[offsets[idx][:, None] + np.arange(length)] += rows
    return np.repeat(np.arange(e0, e0 + span, dtype=COLUMNS["at"]), per_ms)


def _gmv_where_orders_are(slot_orders: Int64Array, cum_gmv: Int64Array) -> Int64Array:
    """Each slot's GMV, moved along to the next slot that has orders to carry it.

    At a small scale many slots have no order; the fen the curve gives them would be lost,
    so a slot with orders takes everything since the end of the previous one with orders
    (and the last one with orders takes the rest of the window).
    """
    nonempty = np.flatnonzero(slot_orders)
    slot_gmv = np.zeros(len(slot_orders), dtype=np.int64)
    if len(nonempty) == 0:
        if cum_gmv[-1] > cum_gmv[0]:
            raise ValueError("this window holds no order at this scale; widen it or raise --scale")
        return slot_gmv
    ends = cum_gmv[nonempty + 1]
    ends[-1] = cum_gmv[-1]
    slot_gmv[nonempty] = np.diff(np.concatenate(([cum_gmv[0]], ends)))
    return slot_gmv


def slot_ms_for(scale: Fraction) -> tuple[int, int]:
    """(slot, block) lengths in ms: one random generator per block of slots.

    100 ms slots in 1 s blocks near full scale; on a miniature day, 1 s slots in 60 s
    blocks, since short ones would mostly be empty and cost more in per-batch overhead
    than their orders."""
    return (SLOT_MS, 1_000) if scale >= Fraction(1, 20) else (1_000, 60_000)


def parse_scale(text: str) -> Fraction:
    """A scale in (0, 1] as an exact fraction, e.g. `0.001`."""
    try:
        scale = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--scale {text!r} is not a number; use e.g. 0.001 or 1") from None
    if not 0 < scale <= 1:
        raise ValueError(f"--scale must be above 0 and at most 1, got {text}")
    if scale.denominator > 1_000_000:
        raise ValueError(f"--scale {text} has too many decimals; use at most 6")
    return scale
