"""The aggregation state's storage codec: `dumps`/`loads` write and read a `State` exactly.

A state is stored as two values: JSON of everything but the brand tally, and the brand
tally as packed bytes (`pack`), ~180,000 counters that JSON would spend milliseconds on.
This is the aggregator's own resume format (docs/formats.md), not the public view: that
is `ticker.core.view`.
"""

from collections import deque
from typing import Any

import numpy as np
import orjson

from ticker.core import timeline
from ticker.core.aggregate import MINUTES, TALLIES, Fired, State
from ticker.core.batch import ReplayMeta

Tally = np.ndarray[Any, np.dtype[np.int64]]

# Stored as they are (the totals, then the counters of odd entries), and as lists of ints.
_TOTALS = ("last_seq", "gmv_fen", "orders", "sim_time_ms", "ended")
_COUNTERS = ("duplicates", "gaps", "dead_letters")
# The tallies but the brands' (packed apart, see `pack`).
_TALLIES = tuple(name for t in TALLIES if t.column != "brd" for name in t.arrays)


def _zeros(n: int) -> Tally:
    return np.zeros(n, dtype=np.int64)


def dumps(state: State) -> bytes:
    """Everything but the brand tally (`pack(state.brand_gmv)`), to resume exactly."""
    return orjson.dumps(
        {
            "run": state.run,
            "meta": orjson.loads(state.meta.to_json()) if state.meta else None,
            **{name: getattr(state, name) for name in _TOTALS},
            **{name: getattr(state, name) for name in _TALLIES},
            "fired": [[f.milestone.id, f.sim_time_ms] for f in state.fired],
            "samples": list(state.samples),
            **{name: getattr(state, name) for name in _COUNTERS},
            "shard": state.shard,
            "recent": state.recent,  # the merge step shows the newest part's
            "curve": state.fixed,
            "next_minute": state.next_minute,
            "carry": [[m, g, o] for m, (g, o) in state.carry.items()],
            "held": state.held,
            "producers": state.producers,
            "producer_gaps": state.producer_gaps,
            "minutes": [
                [int(m), int(state.minute_gmv[m]), int(state.minute_orders[m])]
                for m in np.flatnonzero(state.minute_orders)
            ],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def loads(raw: bytes, brand_blob: bytes | None = None) -> State:
    """The state `dumps` and `pack` wrote (no blob: brand tallies of zero)."""
    data = orjson.loads(raw)
    state = State()
    meta = ReplayMeta.from_json(orjson.dumps(data["meta"])) if data["meta"] else None
    by_id = {m.id: m for m in meta.milestones} if meta else {}
    state.run, state.meta, state.shard = data["run"], meta, data.get("shard", 0)
    for name in _TOTALS + _COUNTERS:
        setattr(state, name, data[name])
    for name in _TALLIES:
        setattr(state, name, np.array(data[name], dtype=np.int64))
    state.brand_gmv = unpack(brand_blob) if brand_blob else _zeros(meta.brands if meta else 0)
    state.fired = [Fired(by_id[mid], t) for mid, t in data["fired"]]
    state.samples = deque(tuple(s) for s in data["samples"])
    state.recent = [tuple(r) for r in data.get("recent", [])]
    state.held = data.get("held", 0)
    state.producers = dict(data.get("producers", {}))
    state.producer_gaps = dict(data.get("producer_gaps", {}))
    if meta is not None and meta.live:
        state.minute_gmv, state.minute_orders = _zeros(MINUTES), _zeros(MINUTES)
        for m, g, o in data.get("minutes", []):
            state.minute_gmv[m], state.minute_orders[m] = g, o
    if "curve" in data:
        state.fixed = [list(p) for p in data["curve"]]
        state.next_minute = data["next_minute"]
        state.carry = {m: (g, o) for m, g, o in data["carry"]}
    elif meta is not None and meta.shards == 1:
        # A state written before the curve was kept: its start, then the latest.
        state.start_curve()
        state.next_minute = max(
            state.next_minute,
            (state.sim_time_ms // timeline.STEP_MS + 1) * timeline.STEP_MS,
        )
    return state


def pack(values: Tally) -> bytes:
    """A non-negative int64 array as raw little-endian bytes after a one-byte width: 4
    bytes a value while every value fits (a miniature day), else 8. Raw bytes cost one
    memory copy; any text encoding of ~180,000 counters costs milliseconds a commit."""
    if len(values) and int(values.min()) < 0:
        raise ValueError("a tally went negative")
    if not len(values) or int(values.max()) < 2**32:
        return b"\x04" + values.astype("<u4").tobytes()
    return b"\x08" + values.astype("<i8", copy=False).tobytes()


def unpack(packed: bytes) -> Tally:
    """The array `pack` wrote; raises ValueError for bytes it cannot have written."""
    width = packed[0]
    if not 1 <= width <= 8 or (len(packed) - 1) % width:
        raise ValueError(f"bad packed brand tally (width {width}, {len(packed)} bytes)")
    cut = np.frombuffer(packed, dtype=np.uint8, offset=1).reshape(-1, width)
    full = np.zeros((len(cut), 8), dtype=np.uint8)
    full[:, :width] = cut
    return full.view("<i8").reshape(-1).astype(np.int64)
