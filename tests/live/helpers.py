"""Building blocks of the live tests: an event's start entry and producers' batches."""

import datetime as dt
from typing import Any

from ticker.core.batch import Orders, Start, decode
from ticker.core.orders import Batcher, event_meta, parse_order

DAY = dt.date(2026, 11, 27)
META = event_meta({"title": "Test sale", "categories": ["Shoes"], "utc_offset": "+08:00"}, DAY)
RUN = "live-test"


def start() -> Start:
    return Start(RUN, 0, META)


def order(i: int, minute: int = 0, amount: str = "10.00", **names: str) -> dict[str, Any]:
    """Order `i`, paid at 10:`minute` of the event's day (event time)."""
    return {"id": f"o{i}", "paid_at": f"2026-11-27T10:{minute:02d}:00", "amount": amount, **names}


def batch(producer: str, seq: int, orders: list[dict[str, Any]]) -> Orders:
    """A producer's batch of these orders, through the real encoder and decoder."""
    b = Batcher(META.countries[0])
    for o in orders:
        b.add(parse_order(o, META.origin_ms, META.utc_offset_minutes))
    entry = decode(b.fields(RUN, producer, seq))
    assert isinstance(entry, Orders)
    return entry
