"""Real orders in: a live event's settings, one order's validation, and batches. Pure.

A live event (`ticker live start`) is a run whose day starts at `origin_ms` (Unix ms of
00:00 at the event's UTC offset); its batches come from producers (`ticker.producer`,
`ticker ingest`, `POST /api/orders`), each numbering its own batches 1, 2, ... An order is

    id            string (or integer), 1..64 characters; unique within the event
    paid_at       ISO 8601 (an offset or Z; without one, the event's offset) or Unix ms
    amount        decimal string in the currency's units ("199.90") or integer hundredths
                  (fen); never a float
    category, seller_country, buyer_region, brand: optional names, 1..100 characters

A bad order raises OrderError naming the field and the reason.
"""

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from ticker.core.batch import (
    MAX_META_INT,
    MAX_NAME_CHARS,
    MAX_ORDER_FEN,
    MAX_ORDERS_PER_BATCH,
    Milestone,
    ReplayMeta,
    encode_orders,
)
from ticker.core.clock import DAY_MS

OPTIONAL = ("category", "seller_country", "buyer_region", "brand")
COLUMN_OF = {"category": "cat", "seller_country": "cty", "buyer_region": "reg", "brand": "brd"}
# The most distinct names one batch may carry per column (its index column's width).
BATCH_NAMES = {"cat": 256, "cty": 256, "reg": 65_536, "brd": 2**32}
UNNAMED = {"cat": "Other", "reg": "Other", "brd": "Other"}  # a missing name (cty: home)
MAX_ID_CHARS = 64
_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]{1,2})?$")


class OrderError(ValueError):
    """An order that cannot be taken: which field, and why."""

    def __init__(self, field: str, reason: str, line: int | None = None) -> None:
        self.field, self.reason, self.line = field, reason, line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{field}: {reason}")

    def at_line(self, line: int) -> "OrderError":
        return OrderError(self.field, self.reason, line)

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Order:
    """A validated order: paid-at as ms since the event's 00:00, the amount in fen."""

    id: str
    at: int
    amount_fen: int
    category: str | None = None
    seller_country: str | None = None
    buyer_region: str | None = None
    brand: str | None = None


def parse_amount(value: Any) -> int:
    """An amount in fen from a decimal string in yuan or an integer in fen."""
    if isinstance(value, bool | float):
        raise OrderError(
            "amount",
            'must be a decimal string in yuan ("199.90") or an integer in fen, not '
            f"{type(value).__name__} {value!r}"[:120],
        )
    if isinstance(value, int):
        fen = value
    elif isinstance(value, str):
        text = value.strip()
        if not _AMOUNT.match(text):
            raise OrderError(
                "amount", f"{value[:40]!r} is not a decimal amount with at most 2 decimals"
            )
        try:
            fen = int(Decimal(text) * 100)
        except InvalidOperation:
            raise OrderError("amount", f"{value[:40]!r} is not a number") from None
    else:
        raise OrderError("amount", "is missing" if value is None else "must be a string or int")
    if not 1 <= fen <= MAX_ORDER_FEN:
        raise OrderError("amount", f"must be 1..{MAX_ORDER_FEN:,} fen, got {fen:,}")
    return fen


def parse_paid_at(value: Any, origin_ms: int, offset_minutes: int) -> int:
    """Paid-at as ms since the event's 00:00, from ISO 8601 or Unix ms."""
    if isinstance(value, bool | float):
        raise OrderError("paid_at", "must be ISO 8601 or integer Unix ms, not a float")
    if isinstance(value, int):
        unix_ms = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            unix_ms = int(text)
        else:
            try:
                when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise OrderError("paid_at", f"{value[:40]!r} is not ISO 8601 or Unix ms") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
            unix_ms = int(when.timestamp() * 1000)
    else:
        raise OrderError("paid_at", "is missing" if value is None else "must be a string or int")
    at = unix_ms - origin_ms
    if not 0 <= at < DAY_MS:
        raise OrderError("paid_at", f"{value!r} is outside the event's day"[:120])
    return at


def _name(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise OrderError(key, f"must be a string of at most {MAX_NAME_CHARS} characters")
    return value


def parse_order(obj: Any, origin_ms: int, offset_minutes: int = 0) -> Order:
    """Validate one order (a mapping); OrderError says which field is wrong and why."""
    if not isinstance(obj, Mapping):
        raise OrderError("order", "must be a JSON object")
    raw_id = obj.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise OrderError("id", "is missing" if raw_id is None else "must be a string or integer")
    order_id = str(raw_id)
    if not 0 < len(order_id) <= MAX_ID_CHARS:
        raise OrderError("id", f"must be 1..{MAX_ID_CHARS} characters")
    return Order(
        order_id,
        parse_paid_at(obj.get("paid_at"), origin_ms, offset_minutes),
        parse_amount(obj.get("amount")),
        _name(obj, "category"),
        _name(obj, "seller_country"),
        _name(obj, "buyer_region"),
        _name(obj, "brand"),
    )


@dataclass
class Batcher:
    """Orders gathered into one batch's columns, with the names its indices point into."""

    home: str  # the name of a missing seller_country (the event's home market)
    limit: int = 4000
    ids: list[str] = field(default_factory=list)
    at: list[int] = field(default_factory=list)
    amt: list[int] = field(default_factory=list)
    index: dict[str, list[int]] = field(
        default_factory=lambda: {c: [] for c in ("cat", "cty", "reg", "brd")}
    )
    names: dict[str, dict[str, int]] = field(
        default_factory=lambda: {c: {} for c in ("cat", "cty", "reg", "brd")}
    )

    def __len__(self) -> int:
        return len(self.amt)

    def fits(self, order: Order) -> bool:
        """Whether the order fits this batch (its size and its columns' widths)."""
        if len(self.amt) >= min(self.limit, MAX_ORDERS_PER_BATCH):
            return False
        for key, column in COLUMN_OF.items():
            names = self.names[column]
            if len(names) >= BATCH_NAMES[column] and self._named(order, key) not in names:
                return False
        return True

    def _named(self, order: Order, key: str) -> str:
        value: str | None = getattr(order, key)
        if value is not None:
            return value
        return self.home if key == "seller_country" else UNNAMED[COLUMN_OF[key]]

    def add(self, order: Order) -> None:
        # Unrolled over the four name columns: this runs once per order taken over HTTP.
        self.ids.append(order.id)
        self.at.append(order.at)
        self.amt.append(order.amount_fen)
        names, index = self.names, self.index
        for column, value in (
            ("cat", order.category or UNNAMED["cat"]),
            ("cty", order.seller_country or self.home),
            ("reg", order.buyer_region or UNNAMED["reg"]),
            ("brd", order.brand or UNNAMED["brd"]),
        ):
            known = names[column]
            index[column].append(known.setdefault(value, len(known)))

    def fields(self, run: str, producer: str, seq: int) -> dict[bytes, bytes]:
        """The batch as an orders entry of the live run."""
        at = np.array(self.at, dtype="<u4")
        columns = {
            "at": at,
            "amt": np.array(self.amt, dtype="<i8"),
            **{c: np.array(v, dtype=np.int64) for c, v in self.index.items()},
        }
        names = {c: list(v) for c, v in self.names.items()}
        return encode_orders(run, seq, int(at.min()), int(at.max()) + 1, columns, producer, names)


def origin_of(day: dt.date, offset_minutes: int) -> int:
    """Unix ms of 00:00 of `day` at this UTC offset."""
    tz = dt.timezone(dt.timedelta(minutes=offset_minutes))
    return int(dt.datetime.combine(day, dt.time(), tz).timestamp() * 1000)


# -- live events ---------------------------------------------------------------------------

DEFAULT_GMV_MILESTONES = (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)
DEFAULT_ORDER_MILESTONES = (1_000, 10_000, 100_000, 1_000_000)
_OFFSET = re.compile(r"^([+-])(\d\d):(\d\d)$")
EVENT_KEYS = {
    "title",
    "currency",
    "usd_rate",
    "day",
    "utc_offset",
    "home_country",
    "milestones",
    "last_year",
    "last_year_total",
    "categories",
    "countries",
    "regions",
    "brands",
}


class EventError(ValueError):
    """A live event's settings are wrong: which one, and why."""


def _offset_minutes(text: str) -> int:
    m = _OFFSET.match(text)
    if not m:
        raise EventError(f"utc_offset {text!r} must look like +08:00 or -05:00")
    minutes = int(m[2]) * 60 + int(m[3])
    return -minutes if m[1] == "-" else minutes


def _units(value: Any, what: str) -> int:
    """An amount in the currency's units (decimal string or integer) as hundredths."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _AMOUNT.match(value.strip()):
        raise EventError(f'{what} must be a decimal amount such as "1000000" or "99.50"')
    fen = int(Decimal(value.strip()) * 100)
    if not 1 <= fen <= MAX_META_INT:
        raise EventError(f"{what} must be above zero and below 2**62 fen")
    return fen


def _format_units(fen: int, currency: str) -> str:
    units = fen // 100
    for size, suffix in ((1_000_000_000, "bn"), (1_000_000, "m"), (1_000, "k")):
        if units >= size and units % size == 0:
            return f"{currency} {units // size}{suffix}"
    return f"{currency} {units:,}"


def _names(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(x, str) and 0 < len(x) <= MAX_NAME_CHARS for x in value
    ):
        raise EventError(f"{key} must be a list of names (1..{MAX_NAME_CHARS} characters)")
    return tuple(dict.fromkeys(value))


def _milestones(data: Mapping[str, Any], currency: str) -> tuple[Milestone, ...]:
    raw = data.get("milestones")
    if raw is None:
        raw = [{"amount": str(a)} for a in DEFAULT_GMV_MILESTONES]
        raw += [{"orders": n} for n in DEFAULT_ORDER_MILESTONES]
    if not isinstance(raw, list):
        raise EventError('milestones must be a list of { amount = "…" } or { orders = N }')
    out: dict[str, Milestone] = {}
    for i, m in enumerate(raw, 1):
        if not isinstance(m, dict) or len({"amount", "orders"} & set(m)) != 1:
            raise EventError(f"milestone {i} needs exactly one of amount or orders")
        label = m.get("label")
        if label is not None and not isinstance(label, str):
            raise EventError(f"milestone {i}: label must be a string")
        if "amount" in m:
            fen = _units(m["amount"], f"milestone {i} amount")
            mid = f"gmv-{fen}"
            out[mid] = Milestone(mid, label or _format_units(fen, currency), "gmv_fen", fen)
        else:
            n = m["orders"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise EventError(f"milestone {i}: orders must be a whole number >= 1")
            mid = f"orders-{n}"
            out[mid] = Milestone(mid, label or f"{n:,} orders", "orders", n)
    return tuple(out.values())


def event_meta(data: Mapping[str, Any], today: dt.date | None = None) -> ReplayMeta:
    """A live run's start meta from an event's settings (a TOML file's table, or flags).

    Only `title` is required; see docs/live.md for every setting and its default."""
    unknown = set(data) - EVENT_KEYS
    if unknown:
        raise EventError(f"unknown setting(s) {', '.join(sorted(unknown))}")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise EventError("title is required (a non-empty string)")
    currency = data.get("currency", "CNY")
    if not isinstance(currency, str) or not re.match(r"^[A-Z]{3}$", currency):
        raise EventError("currency must be a 3-letter code such as CNY")
    usd_rate = str(data.get("usd_rate", "0"))
    try:
        if Decimal(usd_rate) < 0:
            raise InvalidOperation
    except InvalidOperation:
        raise EventError(f'usd_rate {usd_rate!r} must be a decimal string such as "7.10"') from None
    offset = _offset_minutes(str(data.get("utc_offset", "+00:00")))
    day = data.get("day")
    if day is None:
        tz = dt.timezone(dt.timedelta(minutes=offset))
        day = today or dt.datetime.now(tz).date()
    elif isinstance(day, str):
        try:
            day = dt.date.fromisoformat(day)
        except ValueError:
            raise EventError(f"day {day!r} must be a date, YYYY-MM-DD") from None
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
        raise EventError("day must be a date, YYYY-MM-DD")
    home = data.get("home_country", "Home")
    if not isinstance(home, str) or not 0 < len(home) <= MAX_NAME_CHARS:
        raise EventError("home_country must be a name")
    countries = (home, *(c for c in _names(data, "countries") if c != home))
    points = []
    for i, p in enumerate(data.get("last_year", []), 1):
        if not isinstance(p, dict) or set(p) != {"at", "amount"}:
            raise EventError(f'last_year point {i} needs at = "HH:MM" and amount = "…"')
        try:
            hh, mm = (int(x) for x in str(p["at"]).split(":")[:2])
        except ValueError:
            raise EventError(f"last_year point {i}: at must be HH:MM") from None
        points.append(((hh * 60 + mm) * 60_000, _units(p["amount"], f"last_year point {i}")))
    total = data.get("last_year_total")
    last_year_total = _units(total, "last_year_total") if total is not None else 0
    if points and not last_year_total:
        last_year_total = max(v for _, v in points)
    brands = _names(data, "brands")
    return ReplayMeta(
        profile="live",
        title=title.strip(),
        scale="1",
        from_ms=0,
        to_ms=DAY_MS,
        base_gmv_fen=0,
        base_orders=0,
        last_year_gmv_fen=last_year_total,
        categories=_names(data, "categories"),
        countries=countries,
        regions=_names(data, "regions"),
        brands=len(brands),
        milestones=_milestones(data, currency),
        usd_rate=usd_rate,
        last_year_points=tuple(sorted(points)),
        brand_names=brands,
        live=True,
        currency=currency,
        origin_ms=origin_of(day, offset),
        utc_offset_minutes=offset,
    )
