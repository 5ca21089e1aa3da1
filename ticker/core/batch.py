"""The orders stream's entry format: one entry is one batch of orders, stored as columns.

Every entry has the fields `v` (schema version), `kind` and `run` (the producer's run id)
and `seq` (the batch sequence number within the run, from 0, with no gaps). Kinds:

- `start` (seq 0): `meta`, a JSON object describing the replay (see `ReplayMeta`).
- `orders`: `t0`, `t1` (the simulated span in ms since 00:00, t0 <= paid-at < t1), `n` (the
  number of orders) and one little-endian packed column per order attribute:
  `at` u32 paid-at ms, `amt` i64 amount in fen, `cat` u8 category, `cty` u8 seller country,
  `reg` u16 buyer region, `brd` u32 brand. Indices point into the lists of the run's
  `start` entry.
- `end`: `t` (the simulated ms at which the replay ended).

Columns are what make millions of orders per second reachable from Python: one XADD and
one `numpy.frombuffer` per thousand orders instead of per order.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ticker.core.clock import DAY_MS

SCHEMA_VERSION = b"1"

MAX_ORDERS_PER_BATCH = 65_536
# No single paid order of the festival comes near RMB 10m; larger values are corrupt data.
MAX_ORDER_FEN = 1_000_000_000
# The aggregator keeps one counter per brand; a start entry naming more is refused.
MAX_BRANDS = 16_777_216
MAX_SHARDS = 1024
MAX_META_INT = 2**62  # every integer of a start entry's meta (they are stored as int64)


def shard_of(seq: int, shards: int) -> int:
    """The shard whose stream carries order batch `seq` (seqs start at 1; round robin).

    `start` (seq 0) and `end` entries go to every shard.
    """
    return (seq - 1) % shards


def next_seq_of(shard: int, shards: int, after: int) -> int:
    """The first order batch seq above `after` that belongs to `shard`."""
    seq = after + 1
    return seq + (shard - shard_of(seq, shards)) % shards


COLUMNS: dict[str, np.dtype[Any]] = {
    "at": np.dtype("<u4"),
    "amt": np.dtype("<i8"),
    "cat": np.dtype("u1"),
    "cty": np.dtype("u1"),
    "reg": np.dtype("<u2"),
    "brd": np.dtype("<u4"),
}
COLUMN_FIELDS = tuple(name.encode() for name in COLUMNS)  # their fields in an entry

IntArray = npt.NDArray[np.integer[Any]]


class BadEntry(ValueError):
    """A stream entry that cannot be applied; the message says why."""


@dataclass(frozen=True)
class Milestone:
    """A threshold to announce once when `metric` first reaches it."""

    id: str
    label: str
    metric: str  # "gmv_fen" or "orders"
    threshold: int
    documented: str | None = None  # the historical time of day, when known


@dataclass(frozen=True)
class ReplayMeta:
    """What the aggregator needs to know about a replay, carried in its `start` entry."""

    profile: str
    title: str
    scale: str
    from_ms: int
    to_ms: int
    base_gmv_fen: int  # cumulative GMV at from_ms (0 for a replay from midnight)
    base_orders: int
    last_year_gmv_fen: int
    categories: tuple[str, ...]
    countries: tuple[str, ...]  # index 0 is the home market, not a cross-border seller
    regions: tuple[str, ...]
    brands: int
    milestones: tuple[Milestone, ...]
    usd_rate: str = "0"  # RMB per USD on the day, for the page's USD toggle
    # Last year's cumulative GMV as (ms since 00:00, fen) points, scaled, for the chart.
    last_year_points: tuple[tuple[int, int], ...] = ()
    # What regenerates the run exactly (`ticker verify`): the generator's seed and batch size.
    seed: int = 0
    batch_size: int = 0
    # Names of the leading brands (brand index i < len is named), largest first.
    brand_names: tuple[str, ...] = ()
    # A brand counts in `brands_over_100m` when its GMV passes this (RMB 100m, scaled);
    # 0 when the profile documents no such count.
    brand_line_fen: int = 0
    # How many orders streams the replay spreads its batches over (see `shard_of`).
    shards: int = 1
    # The first this many regions are the home market's buyers; the rest are abroad (for
    # the count of regions reached abroad). 0: not known (a run that does not say).
    home_regions: int = 0
    # The day before the window, for the chart of a window replay (or a seek): the exact
    # cumulative (sim ms, GMV fen, orders) at each whole minute from 00:00 up to from_ms,
    # the same figures a replay from midnight reaches there (see `ticker.core.timeline`).
    history: tuple[tuple[int, int, int], ...] = ()
    # A live run (`ticker live start`): batches come from many independent producers,
    # each with its own seq (`Orders.producer`), and may name new categories, countries,
    # regions and brands (`Orders.names`), which the run's lists then grow by.
    live: bool = False
    currency: str = "CNY"
    # Unix ms of the live day's 00:00 (paid-at columns are ms since then); 0 for replays.
    origin_ms: int = 0
    utc_offset_minutes: int = 0  # the live event's offset (paid-at without one is read in it)

    @property
    def name_lists(self) -> dict[str, tuple[str, ...]]:
        """The lists each index column points into (brands: the named ones)."""
        return {
            "cat": self.categories,
            "cty": self.countries,
            "reg": self.regions,
            "brd": self.brand_names,
        }

    def to_json(self) -> bytes:
        data = {**self.__dict__, "milestones": [m.__dict__ for m in self.milestones]}
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> "ReplayMeta":
        try:
            data = orjson.loads(raw)
            data["milestones"] = tuple(Milestone(**m) for m in data["milestones"])
            for name in ("categories", "countries", "regions"):
                data[name] = tuple(str(x) for x in data[name])
            data["brand_names"] = tuple(str(x) for x in data.get("brand_names", ()))
            data["brand_line_fen"] = int(data.get("brand_line_fen", 0))
            data["last_year_points"] = tuple(
                (int(t), int(v)) for t, v in data.get("last_year_points", ())
            )
            data["history"] = tuple((int(t), int(g), int(o)) for t, g, o in data.get("history", ()))
            meta = cls(**data)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadEntry(f"start entry has an invalid meta field: {exc}") from None
        _check_meta_types(meta)
        if not 0 <= meta.brands <= MAX_BRANDS:
            raise BadEntry(f"start entry's brands must be 0..{MAX_BRANDS:,}, got {meta.brands}")
        if not 0 <= meta.from_ms < meta.to_ms <= DAY_MS:
            raise BadEntry("start entry's window is not within the day")
        if not 1 <= meta.shards <= MAX_SHARDS:
            raise BadEntry(f"start entry's shards must be 1..{MAX_SHARDS}, got {meta.shards}")
        if meta.home_regions > len(meta.regions):
            raise BadEntry("start entry's home_regions is more than its regions")
        if len(meta.history) > DAY_MS // 60_000 + 1 or any(
            t > meta.from_ms for t, _, _ in meta.history
        ):
            raise BadEntry(
                "start entry's history must be at most one point a minute before from_ms"
            )
        return meta


_META_INTS = (
    "from_ms",
    "to_ms",
    "base_gmv_fen",
    "base_orders",
    "last_year_gmv_fen",
    "brands",
    "seed",
    "batch_size",
    "shards",
    "home_regions",
    "origin_ms",
)


def _check_meta_types(meta: ReplayMeta) -> None:
    """Refuse wrongly typed meta fields here, as a dead letter, rather than let them crash
    the aggregator later (a start entry that always crashes it would stop the pipeline)."""
    for name in (*_META_INTS, "brand_line_fen"):
        value = getattr(meta, name)
        if type(value) is not int or not 0 <= value <= MAX_META_INT:
            raise BadEntry(
                f"start entry's {name} must be an integer 0..2**62, got {str(value)[:40]}"
            )
    for name in ("last_year_points", "history"):
        if any(not 0 <= v <= MAX_META_INT for point in getattr(meta, name) for v in point):
            raise BadEntry(f"start entry's {name} holds a value outside 0..2**62")
    if type(meta.utc_offset_minutes) is not int or abs(meta.utc_offset_minutes) > 24 * 60:
        raise BadEntry("start entry's utc_offset_minutes must be an integer -1440..1440")
    if type(meta.live) is not bool:
        raise BadEntry("start entry's live must be true or false")
    if meta.live and meta.shards != 1:
        raise BadEntry("a live run cannot be sharded (shards must be 1)")
    for name in ("profile", "title", "scale", "usd_rate", "currency"):
        if not isinstance(getattr(meta, name), str):
            raise BadEntry(f"start entry's {name} must be a string")
    for m in meta.milestones:
        if (
            not isinstance(m.id, str)
            or not isinstance(m.label, str)
            or m.metric not in ("gmv_fen", "orders")
            or type(m.threshold) is not int
            or not 1 <= m.threshold <= MAX_META_INT
            or not isinstance(m.documented, str | None)
        ):
            raise BadEntry(f"start entry has an invalid milestone: {m!r}"[:200])


@dataclass(frozen=True)
class Start:
    run: str
    seq: int
    meta: ReplayMeta
    shard: int = 0  # which of the meta's shards this copy of the start entry was sent to


@dataclass(frozen=True)
class Orders:
    """A decoded batch; the columns are read-only views of the entry's bytes."""

    run: str
    seq: int
    t0: int
    t1: int
    at: IntArray
    amt: IntArray
    cat: IntArray
    cty: IntArray
    reg: IntArray
    brd: IntArray
    # A live run's batches: who wrote it (`seq` is then that producer's own sequence) and
    # the names its index columns point into, per column ("cat", "cty", "reg", "brd");
    # a column without names points into the run's own lists.
    producer: str = ""
    names: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def n(self) -> int:
        return len(self.amt)


@dataclass(frozen=True)
class End:
    run: str
    seq: int
    t: int


Entry = Start | Orders | End


def encode_start(run: str, meta: ReplayMeta, shard: int = 0) -> dict[bytes, bytes]:
    fields = {
        b"v": SCHEMA_VERSION,
        b"kind": b"start",
        b"run": run.encode(),
        b"seq": b"0",
        b"meta": meta.to_json(),
    }
    if meta.shards > 1:
        fields[b"shard"] = str(shard).encode()
    return fields


def encode_orders(
    run: str,
    seq: int,
    t0: int,
    t1: int,
    columns: dict[str, IntArray],
    producer: str = "",
    names: dict[str, list[str]] | None = None,
) -> dict[bytes, bytes]:
    """An orders entry; `producer` and `names` only for a live run (see `Orders`)."""
    encoded = (columns[name].astype(dtype, copy=False).tobytes() for name, dtype in COLUMNS.items())
    return orders_entry(run, seq, t0, t1, len(columns["amt"]), encoded, producer, names)


def orders_entry(
    run: str,
    seq: int,
    t0: int,
    t1: int,
    n: int,
    columns: Iterable[bytes],
    producer: str = "",
    names: dict[str, list[str]] | None = None,
) -> dict[bytes, bytes]:
    """An orders entry from its `n` orders' columns already encoded, in `COLUMNS` order
    (the replay's workers encode them into shared memory)."""
    fields = {
        b"v": SCHEMA_VERSION,
        b"kind": b"orders",
        b"run": run.encode(),
        b"seq": str(seq).encode(),
        b"t0": str(t0).encode(),
        b"t1": str(t1).encode(),
        b"n": str(n).encode(),
    }
    fields.update(zip(COLUMN_FIELDS, columns, strict=True))
    if producer:
        fields[b"producer"] = producer.encode()
    if names:
        fields[b"names"] = orjson.dumps(names)
    return fields


def encode_end(run: str, seq: int, t: int) -> dict[bytes, bytes]:
    return {
        b"v": SCHEMA_VERSION,
        b"kind": b"end",
        b"run": run.encode(),
        b"seq": str(seq).encode(),
        b"t": str(t).encode(),
    }


def _int(fields: dict[bytes, bytes], name: str, low: int, high: int) -> int:
    raw = fields.get(name.encode())
    if raw is None:
        raise BadEntry(f"missing field {name!r}")
    try:
        value = int(raw)
    except ValueError:
        raise BadEntry(f"field {name!r} is not an integer: {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadEntry(f"field {name!r} = {value} is outside {low}..{high}")
    return value


def decode(fields: dict[bytes, bytes]) -> Entry:
    """Parse and check one stream entry; raise BadEntry saying what is wrong."""
    version = fields.get(b"v")
    if version != SCHEMA_VERSION:
        raise BadEntry(f"unknown schema version {version!r}; this aggregator reads v1")
    try:
        run = fields[b"run"].decode()
    except (KeyError, UnicodeDecodeError):
        raise BadEntry("missing or undecodable field 'run'") from None
    if not 0 < len(run) <= 64:
        raise BadEntry("field 'run' must be 1 to 64 characters")
    kind = fields.get(b"kind")
    seq = _int(fields, "seq", 0, 2**62)
    if kind == b"orders":
        return _decode_orders(fields, run, seq)
    if kind == b"start":
        if seq != 0:
            raise BadEntry("a start entry must have seq 0")
        meta = ReplayMeta.from_json(fields.get(b"meta", b""))
        shard = _int(fields, "shard", 0, meta.shards - 1) if meta.shards > 1 else 0
        return Start(run, seq, meta, shard)
    if kind == b"end":
        return End(run, seq, _int(fields, "t", 0, DAY_MS))
    raise BadEntry(f"unknown kind {kind!r}; expected start, orders or end")


def _decode_orders(fields: dict[bytes, bytes], run: str, seq: int) -> Orders:
    t0 = _int(fields, "t0", 0, DAY_MS)
    t1 = _int(fields, "t1", t0, DAY_MS)
    n = _int(fields, "n", 1, MAX_ORDERS_PER_BATCH)
    cols: dict[str, IntArray] = {}
    for name, dtype in COLUMNS.items():
        raw = fields.get(name.encode())
        if raw is None:
            raise BadEntry(f"missing column {name!r}")
        if len(raw) != n * dtype.itemsize:
            raise BadEntry(
                f"column {name!r} has {len(raw)} bytes, expected "
                f"{n} orders x {dtype.itemsize} bytes"
            )
        cols[name] = np.frombuffer(raw, dtype=dtype)
    at, amt = cols["at"], cols["amt"]
    if int(at.min()) < t0 or int(at.max()) >= max(t1, t0 + 1):
        raise BadEntry(f"paid-at times fall outside the batch span {t0}..{t1}")
    if int(amt.min()) <= 0 or int(amt.max()) > MAX_ORDER_FEN:
        raise BadEntry(
            f"amounts must be 1..{MAX_ORDER_FEN} fen; got {int(amt.min())}..{int(amt.max())}"
        )
    producer = ""
    if b"producer" in fields:
        try:
            producer = fields[b"producer"].decode()
        except UnicodeDecodeError:
            raise BadEntry("field 'producer' is not UTF-8") from None
        if not 0 < len(producer) <= 64:
            raise BadEntry("field 'producer' must be 1 to 64 characters")
        if seq < 1:
            raise BadEntry("a producer's batches have seq 1, 2, ...")
    names = _decode_names(fields.get(b"names"), cols) if b"names" in fields else ()
    return Orders(run, seq, t0, t1, **cols, producer=producer, names=names)


MAX_NAME_CHARS = 100


def _decode_names(
    raw: bytes | None, cols: dict[str, IntArray]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A live batch's names per index column; every index must point into its list."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        raise BadEntry("field 'names' is not JSON") from None
    if not isinstance(data, dict) or not set(data) <= {"cat", "cty", "reg", "brd"}:
        raise BadEntry("field 'names' must be an object with keys among cat, cty, reg, brd")
    out = []
    for column, names in data.items():
        if not isinstance(names, list) or not all(
            isinstance(x, str) and 0 < len(x) <= MAX_NAME_CHARS for x in names
        ):
            raise BadEntry(
                f"names of {column!r} must be a list of 1..{MAX_NAME_CHARS}-character strings"
            )
        top = int(cols[column].max())
        if top >= len(names):
            raise BadEntry(f"column {column!r} has index {top} but the batch names {len(names)}")
        out.append((column, tuple(names)))
    return tuple(sorted(out))
