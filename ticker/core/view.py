"""The public state's shape, declared once, and the view that builds it from a `State`.

`FIELDS` lists every field of the public state (the feed's `u`, a snapshot's `state`,
/api/state) in wire order: its name, the subscription topic that carries it in ticks, its
JSON Schema and a line saying what it is. From it follow the feed's topics (`TOPICS`), the
state definitions of docs/feed.schema.json (`state_schema`, written by
`python -m ticker.schema`), and the checks that `public()`, docs/protocol.md and the page
name the same fields (tests/core/test_view.py).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ticker.core.clock import format_time_of_day

if TYPE_CHECKING:
    from ticker.core.aggregate import Fired, State
    from ticker.core.batch import Milestone

Topic = Literal["totals", "top", "samples", "replay", "curve"]
TOPIC_NAMES: tuple[Topic, ...] = ("totals", "top", "samples", "replay", "curve")


@dataclass(frozen=True)
class Field:
    """One field of the public state."""

    name: str
    topic: Topic  # ticks carry it to clients subscribed to this topic (`totals`: always)
    schema: dict[str, Any]  # JSON Schema of its value (refs into feed.schema.json's $defs)
    description: str
    by_server: bool = False  # added by the server beside the aggregator's view


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


def _count() -> dict[str, Any]:
    return {"type": "integer", "minimum": 0}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _array_of(item: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "array", "items": item, **more}


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


_TOP = _object(name={"type": "string"}, gmv_fen=_count(), orders=_count())

FIELDS: tuple[Field, ...] = (
    Field("run", "totals", _nullable("string"), "replay run id; null before the first replay"),
    Field("profile", "totals", _nullable("string"), "the festival profile's name"),
    Field("title", "totals", _nullable("string"), "the festival profile's title"),
    Field(
        "scale", "totals", _nullable("string"), 'the replay\'s scale, a decimal string ("0.001")'
    ),
    Field("from_ms", "totals", _ref("day_ms"), "the replayed window's start"),
    Field("to_ms", "totals", _ref("day_ms"), "the replayed window's end"),
    Field("sim_time_ms", "totals", _ref("day_ms"), "simulated time reached"),
    Field("sim_time", "totals", _ref("sim_time"), "simulated time reached, HH:MM:SS.mmm"),
    Field("gmv_fen", "totals", _count(), "GMV so far in fen (1/100 RMB)"),
    Field("orders", "totals", _count(), "paid orders so far"),
    Field("gmv_fen_per_s", "totals", _count(), "fen per simulated second, last 5 s"),
    Field("orders_per_s", "totals", _count(), "orders per simulated second, last 5 s"),
    Field(
        "top_categories",
        "top",
        _array_of(_TOP, maxItems=10),
        "up to 10 categories by GMV, largest first",
    ),
    Field(
        "top_countries",
        "top",
        _array_of(_TOP, maxItems=10),
        "up to 10 cross-border seller countries by GMV, largest first",
    ),
    Field("milestones", "totals", _array_of(_ref("fired_milestone")), "milestones fired, in order"),
    Field("upcoming", "totals", _array_of(_ref("upcoming_milestone")), "milestones not yet fired"),
    Field(
        "before_window",
        "totals",
        _array_of(_ref("upcoming_milestone")),
        "milestones the window's base had already passed",
    ),
    Field("last_year_gmv_fen", "totals", _count(), "last year's whole-day GMV (fen, scaled)"),
    Field(
        "last_year_points",
        "totals",
        _array_of(
            {
                "type": "array",
                "prefixItems": [_ref("day_ms"), _count()],
                "minItems": 2,
                "maxItems": 2,
            }
        ),
        "last year's cumulative GMV: [ms since 00:00, fen] pairs",
    ),
    Field(
        "usd_rate",
        "totals",
        {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
        "RMB per USD on the day, a decimal string",
    ),
    Field(
        "currency",
        "totals",
        {"type": "string", "pattern": "^[A-Z]{3}$"},
        "the currency of every amount, ISO 4217 (`CNY` for a festival replay; a live event's own)",
    ),
    Field(
        "sample_orders",
        "samples",
        _array_of(
            _object(
                at_ms=_ref("day_ms"),
                amt_fen={"type": "integer", "minimum": 1},
                seller={"type": "string"},
                buyer={"type": "string"},
            )
        ),
        "a few recent cross-border orders",
    ),
    Field("brands_over_100m", "totals", _count(), "brands above RMB 100m of GMV (scaled)"),
    Field("cross_border_orders", "totals", _count(), "orders from sellers abroad, over the window"),
    Field(
        "buyer_regions_abroad",
        "totals",
        {**_nullable("integer"), "minimum": 0},
        "buyer regions abroad that ordered in the window; null when the run does not say "
        "which are home",
    ),
    Field(
        "top_brands",
        "top",
        _array_of(_object(id=_count(), name={"type": "string"}, gmv_fen=_count()), maxItems=10),
        "up to 10 brands by GMV, largest first",
    ),
    Field("ended", "totals", {"type": "boolean"}, "true once the window is complete and applied"),
    Field("duplicates", "totals", _count(), "order entries received twice and counted once"),
    Field("dead_letters", "totals", _count(), "malformed order entries set aside"),
    Field("gaps", "totals", _count(), "order entries that came ahead of a missing seq"),
    Field("held", "totals", _count(), "order entries waiting now for a missing seq"),
    Field(
        "curve",
        "curve",
        _array_of(_ref("curve_point"), maxItems=1442),
        "the day's curve: whole in a snapshot and /api/state, its tail in a tick",
    ),
    Field(
        "replay",
        "replay",
        {"oneOf": [{"type": "null"}, _ref("replay")]},
        "the replay's status; null when no replay reports",
        by_server=True,
    ),
)

NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
VIEW_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS if not f.by_server)
TOPICS: dict[str, tuple[str, ...]] = {
    topic: tuple(f.name for f in FIELDS if f.topic == topic) for topic in TOPIC_NAMES
}


def state_schema() -> dict[str, dict[str, Any]]:
    """The `state` (a tick's), `full_state` and `state_patch` (a delta's) definitions of
    docs/feed.schema.json."""
    return {
        "state": {
            "type": "object",
            "description": "a tick's state: the totals fields always, the other topics' "
            "fields when subscribed",
            "required": list(TOPICS["totals"]),
            "properties": {f.name: {**f.schema, "description": f.description} for f in FIELDS},
            "additionalProperties": False,
        },
        "full_state": {
            "$ref": "#/$defs/state",
            "required": list(NAMES),
            "description": "the whole state: snapshot and /api/state",
        },
        "state_patch": {
            "type": "object",
            "description": "a delta's patch of the state (docs/protocol.md, Delta ticks): "
            "the fields that changed, each a new value or a patch of the old one",
            "propertyNames": {"enum": list(NAMES)},
        },
    }


def fired_milestone(fired: "Fired") -> dict[str, Any]:
    """A fired milestone as the feed shows it: the milestone, and when it was crossed."""
    return {
        **fired.milestone.__dict__,
        "sim_time_ms": fired.sim_time_ms,
        "sim_time": format_time_of_day(fired.sim_time_ms),
    }


def _milestone(m: "Milestone") -> dict[str, Any]:
    return {
        "id": m.id,
        "label": m.label,
        "metric": m.metric,
        "threshold": m.threshold,
        "documented": m.documented,
    }


def public(state: "State") -> dict[str, Any]:
    """The public state, as the feed and /api/state show it (the fields `VIEW_NAMES` lists,
    in that order; the server adds `replay`)."""
    meta = state.meta
    gmv_rate, orders_rate = state.rates()
    done = {f.milestone.id for f in state.fired}
    reached = {"gmv_fen": state.gmv_fen, "orders": state.orders}
    base = {"gmv_fen": meta.base_gmv_fen, "orders": meta.base_orders} if meta else {}
    milestones = meta.milestones if meta else ()
    return {
        "run": state.run,
        "profile": meta.profile if meta else None,
        "title": meta.title if meta else None,
        "scale": meta.scale if meta else None,
        "from_ms": meta.from_ms if meta else 0,
        "to_ms": meta.to_ms if meta else 0,
        "sim_time_ms": state.sim_time_ms,
        "sim_time": format_time_of_day(state.sim_time_ms),
        "gmv_fen": state.gmv_fen,
        "orders": state.orders,
        "gmv_fen_per_s": gmv_rate,
        "orders_per_s": orders_rate,
        "top_categories": state.top(meta.categories, state.cat_gmv, state.cat_orders)
        if meta
        else [],
        "top_countries": state.top(meta.countries, state.cty_gmv, state.cty_orders, True)
        if meta
        else [],
        "milestones": [fired_milestone(f) for f in state.fired],
        "upcoming": [
            _milestone(m)
            for m in milestones
            # A window that starts past a threshold never fires it: not upcoming.
            if m.id not in done and m.threshold > reached[m.metric]
        ],
        # Passed before this window started (a window replay, a seek): never fired by this
        # run, but part of the day.
        "before_window": [
            _milestone(m)
            for m in sorted(milestones, key=lambda m: (m.metric != "gmv_fen", m.threshold))
            if m.id not in done and m.threshold <= base[m.metric]
        ],
        "last_year_gmv_fen": meta.last_year_gmv_fen if meta else 0,
        "last_year_points": [list(p) for p in meta.last_year_points] if meta else [],
        "usd_rate": meta.usd_rate if meta else "0",
        "currency": meta.currency if meta else "CNY",
        "sample_orders": [
            {"at_ms": t, "amt_fen": a, "seller": meta.countries[c], "buyer": meta.regions[r]}
            for t, a, c, r in state.recent
        ]
        if meta
        else [],
        "brands_over_100m": state.brands_over_line(),
        # Orders from sellers abroad (country 0 is the home market), of the window.
        "cross_border_orders": int(state.cty_orders[1:].sum()),
        "buyer_regions_abroad": state.regions_abroad(),
        "top_brands": state.top_brands(),
        "ended": state.ended,
        "duplicates": state.duplicates,
        "dead_letters": state.dead_letters,
        "gaps": state.gaps,
        "held": state.held,
        "curve": state.curve(),
    }
