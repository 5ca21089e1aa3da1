"""Paid orders of a festival day, generated deterministically in columnar batches.

The day is cut into 100 ms slots. The cumulative curves fix, for every slot, exactly how
many orders are paid in it and exactly how many fen they add up to; the random draws only
decide how those fen are spread over the orders and what each order is (time within the
slot, category, seller country, buyer region, brand). So the totals of any window are exact
whatever the seed, and the same (profile, seed, scale, window, batch size) always gives
byte-identical batches. Random numbers come from one generator per second of the day,
seeded from (seed, second), so a replay can start or resume at any slot.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator import brands
from simulator.curve import Curve
from simulator.profile import Profile, Weighted
from ticker.core.batch import Milestone, Orders, ReplayMeta
from ticker.core.clock import DAY_MS
from ticker.core.timeline import STEP_MS

SLOT_MS = 100  # at full scale; a miniature day uses longer slots (see `slot_ms_for`)
MIN_ORDER_FEN = 100  # no paid order below RMB 1
DEFAULT_BATCH = 4_000

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
    ) -> None:
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
        chunks = -(-self.slot_orders // batch_size)
        # Batch seq numbers: 0 is the start entry, then every non-empty slot's chunks.
        self.first_seq: Int64Array = 1 + np.concatenate(([0], np.cumsum(chunks)[:-1]))
        self.chunks = chunks
        self.last_orders_seq = int(self.first_seq[-1] + chunks[-1] - 1)
        self.end_seq = self.last_orders_seq + 1
        self.cat_p = _probabilities(profile.categories)
        self.intl_p = _probabilities(profile.countries[1:])
        self.reg_p = _probabilities(profile.regions)
        share = Fraction(profile.international_share)
        self.intl_num, self.intl_den = share.numerator, share.denominator
        try:
            brand_p = brands.shares(profile.brands, profile.brands_over_100m, profile.final_gmv_fen)
        except ValueError as exc:
            raise ValueError(f"{profile.name}: {exc}") from None
        self.brand_cdf = np.cumsum(brand_p)
        self.brand_cdf[-1] = 1.0
        self._history: tuple[tuple[int, int, int], ...] | None = None

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

    def slot_of_seq(self, seq: int) -> tuple[int, int]:
        """(slot index, chunk within it) of an orders batch number."""
        slot = int(np.searchsorted(self.first_seq, seq, side="right")) - 1
        while self.chunks[slot] == 0 or seq >= self.first_seq[slot] + self.chunks[slot]:
            slot += 1  # empty slots share their first_seq with the next non-empty one
        return slot, seq - int(self.first_seq[slot])

    def batches(self, after_seq: int = 0) -> Iterator[Batch]:
        """Every orders batch with a seq above `after_seq`, in order."""
        if after_seq >= self.last_orders_seq:
            return
        slot, chunk = self.slot_of_seq(after_seq + 1)
        block = int(self.edges[slot]) // self.block_ms
        while slot < len(self.slot_orders):
            block_end = (block + 1) * self.block_ms
            slots = [slot]
            while slots[-1] + 1 < len(self.slot_orders) and self.edges[slots[-1] + 1] < block_end:
                slots.append(slots[-1] + 1)
            yield from self._block_batches(block, slots, chunk)
            slot, chunk, block = slots[-1] + 1, 0, block + 1

    def _block_batches(self, block: int, slots: list[int], skip_chunks: int) -> Iterator[Batch]:
        """Generate one second's orders (all of its slots, for determinism) and cut them."""
        first = self._first_slot_of_block(block)
        all_slots = list(range(first, slots[-1] + 1))
        counts = self.slot_orders[all_slots]
        total = int(counts.sum())
        if total == 0:
            return
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, block])))
        # International orders: exactly floor(share * cumulative orders) by the end of
        # every block, counted from midnight, so the day's split is exact.
        before, after = int(self.cum_orders[first]), int(self.cum_orders[slots[-1] + 1])
        intl = (after * self.intl_num) // self.intl_den - (before * self.intl_num) // self.intl_den
        columns = self._draw(rng, all_slots, counts, total, intl)
        # Plain ints from here: this loop runs once per batch.
        starts = np.concatenate(([0], np.cumsum(counts))).tolist()
        chunks = self.chunks[all_slots].tolist()
        first_seq = self.first_seq[all_slots].tolist()
        edges = self.edges[first : slots[-1] + 2].tolist()
        size = self.batch_size
        for i, slot in enumerate(all_slots):
            if slot < slots[0] or starts[i] == starts[i + 1]:
                continue
            lo, hi = starts[i], starts[i + 1]
            first_chunk = skip_chunks if slot == slots[0] else 0
            for chunk in range(first_chunk, chunks[i]):
                a = lo + chunk * size
                b = min(hi, a + size)
                yield Batch(
                    first_seq[i] + chunk,
                    edges[i],
                    edges[i + 1],
                    {k: v[a:b] for k, v in columns.items()},
                )

    def _first_slot_of_block(self, block: int) -> int:
        return max(0, int(np.searchsorted(self.edges, block * self.block_ms, side="right")) - 1)

    def _draw(
        self,
        rng: np.random.Generator,
        slots: list[int],
        counts: Int64Array,
        total: int,
        intl_orders: int,
    ) -> dict[str, npt.NDArray[Any]]:
        t0 = self.edges[slots]
        lengths = self.edges[[s + 1 for s in slots]] - t0
        slot_of_order = np.repeat(np.arange(len(slots)), counts)
        at = t0[slot_of_order] + (rng.random(total) * lengths[slot_of_order]).astype(np.int64)
        at.sort()  # slots are consecutive, so this sorts within each slot
        amt = self._amounts(rng, counts, self.slot_gmv[slots], slot_of_order, total)
        intl = np.zeros(total, dtype=bool)
        intl[rng.permutation(total)[:intl_orders]] = True
        cty = np.where(intl, rng.choice(len(self.intl_p), total, p=self.intl_p) + 1, 0)
        brd = np.searchsorted(self.brand_cdf, rng.random(total), side="right")
        brd = np.minimum(brd, self.profile.brands - 1)
        return {
            "at": at,
            "amt": amt,
            "cat": rng.choice(len(self.cat_p), total, p=self.cat_p),
            "cty": cty,
            "reg": rng.choice(len(self.reg_p), total, p=self.reg_p),
            "brd": brd,
        }

    @staticmethod
    def _amounts(
        rng: np.random.Generator,
        counts: Int64Array,
        gmv: Int64Array,
        slot_of_order: Int64Array,
        total: int,
    ) -> Int64Array:
        """Realistic order values that add up to each slot's GMV exactly, in fen."""
        # Log-normal weights (median ~ mean / 1.5) as whole numbers, so the split is exact.
        weights = (rng.lognormal(0.0, 0.9, total) * 10_000).astype(np.int64) + 1
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
        return amt.astype(np.int64)


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
