"""An order's validation and a live event's settings: clear errors, never a float. Pure."""

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from ticker.core.orders import EventError, OrderError, event_meta, parse_order

ORIGIN = int(dt.datetime(2026, 11, 27, tzinfo=dt.UTC).timestamp() * 1000)
GOOD = {"id": "A1", "paid_at": "2026-11-27T10:00:00Z", "amount": "199.90"}


def _error(**changes: object) -> OrderError:
    with pytest.raises(OrderError) as info:
        parse_order({**GOOD, **changes}, ORIGIN)
    return info.value


def test_a_decimal_string_in_yuan_and_integer_fen_give_the_same_amount() -> None:
    """'199.90' and 19990 are both 19,990 fen."""
    assert parse_order(GOOD, ORIGIN).amount_fen == 19_990
    assert parse_order({**GOOD, "amount": 19_990}, ORIGIN).amount_fen == 19_990


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("amount", 199.9, "not float"),
        ("amount", "199.999", "at most 2 decimals"),
        ("amount", "0", "must be 1.."),
        ("amount", None, "is missing"),
        ("paid_at", "yesterday", "not ISO 8601"),
        ("paid_at", "2026-11-28T00:00:00Z", "outside the event's day"),
        ("id", None, "is missing"),
        ("brand", 7, "must be a string"),
    ],
)
def test_a_bad_order_names_its_field_and_reason(field: str, value: object, reason: str) -> None:
    """Each malformed field is reported by name, with why."""
    error = _error(**{field: value})
    assert (error.field, reason in error.reason) == (field, True)


def test_paid_at_without_an_offset_is_read_in_the_events_offset() -> None:
    """10:00 at +08:00 is 02:00 UTC; Unix ms are taken as they are."""
    local = parse_order({**GOOD, "paid_at": "2026-11-27T10:00:00"}, ORIGIN, 8 * 60)
    assert local.at == 2 * 3_600_000
    assert parse_order({**GOOD, "paid_at": ORIGIN + 5}, ORIGIN).at == 5


def test_a_title_alone_is_a_live_event_with_defaults() -> None:
    """CNY, no USD toggle, the default milestones, the whole day from 00:00 UTC."""
    meta = event_meta({"title": "My sale"}, dt.date(2026, 11, 27))
    assert (meta.live, meta.currency, meta.usd_rate, meta.origin_ms) == (True, "CNY", "0", ORIGIN)
    assert [m.id for m in meta.milestones][:2] == ["gmv-1000000", "gmv-10000000"]


def test_the_sample_event_file_is_a_valid_event() -> None:
    """docs/event.sample.toml opens a run: three milestones, its lists, CNY 1.2m last year."""
    path = Path(__file__).parents[2] / "docs" / "event.sample.toml"
    meta = event_meta(tomllib.loads(path.read_text()))
    assert (len(meta.milestones), meta.last_year_gmv_fen) == (3, 120_000_000)
    assert meta.countries == ("China", "Japan", "United States")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "title is required"),
        ({"title": "x", "utc_offset": "8"}, "utc_offset"),
        ({"title": "x", "milestones": [{"amount": "-5"}]}, "milestone 1 amount"),
        ({"title": "x", "colour": "red"}, "unknown setting"),
    ],
)
def test_a_bad_event_setting_is_refused_with_its_name(
    settings: dict[str, object], message: str
) -> None:
    """A wrong or unknown setting is named in the error."""
    with pytest.raises(EventError, match=message):
        event_meta(settings)
