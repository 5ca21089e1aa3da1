"""Feed messages, built from feed stream entries, and client requests. Pure: no I/O.

Each feed stream entry (written by the aggregator's commit) holds one field `u`: the full
public state after the commit plus `fired`, the milestones that commit fired. The entry id
is the feed position. The messages are documented in docs/protocol.md and
docs/feed.schema.json.
"""

import struct
from dataclasses import dataclass
from typing import Any

import orjson

from ticker import __version__
from ticker.core.aggregate import State

PROTOCOL = 1

# What /api/state and the snapshot show before any replay has been aggregated.
EMPTY_STATE: dict[str, Any] = State().view()

# Subscription topics and the state fields each adds to ticks; `totals` is always on.
TOPICS: dict[str, tuple[str, ...]] = {
    "totals": (
        "run",
        "profile",
        "title",
        "scale",
        "from_ms",
        "to_ms",
        "sim_time_ms",
        "sim_time",
        "gmv_fen",
        "orders",
        "gmv_fen_per_s",
        "orders_per_s",
        "milestones",
        "upcoming",
        "last_year_gmv_fen",
        "last_year_points",
        "usd_rate",
        "ended",
        "duplicates",
        "dead_letters",
        "brands_over_100m",
    ),
    "top": ("top_categories", "top_countries", "top_brands"),
    "samples": ("sample_orders",),
    "replay": ("replay",),
}
ALL_TOPICS = frozenset(TOPICS)
MAX_RATE_HZ = 10.0


class BadRequest(ValueError):
    """A client message the server cannot take; the text says what is wrong."""


def hello(epoch: str) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL,
        "epoch": epoch,
        "server": f"ticker {__version__}",
        "topics": sorted(TOPICS),
        "max_rate": MAX_RATE_HZ,
    }


def snapshot(
    state: dict[str, Any], position: str, epoch: str, recovered: bool | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "snapshot", "position": position, "epoch": epoch, "state": state}
    if recovered is not None:
        msg["recovered"] = recovered
    return msg


def tick(state: dict[str, Any], position: str) -> dict[str, Any]:
    return {"type": "tick", "position": position, "state": state}


def milestone(fired: dict[str, Any], position: str) -> dict[str, Any]:
    return {"type": "milestone", "position": position, "milestone": fired}


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def only(state: dict[str, Any], topics: frozenset[str]) -> dict[str, Any]:
    """The part of the state a subscription to `topics` receives."""
    if topics == ALL_TOPICS:
        return state
    keep = {field for t in topics | {"totals"} for field in TOPICS[t]}
    return {k: v for k, v in state.items() if k in keep}


def text_frame(payload: bytes) -> bytes:
    """A whole websocket text frame (RFC 6455 section 5.2) carrying `payload`, as a server
    sends it: FIN set, opcode 1, unmasked, no extension bits (so never compressed).

    Built once per message and written as the same bytes to every client that gets it.
    """
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65_536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def parse_entry(fields: dict[bytes, bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state, milestones fired in this commit) from one feed stream entry."""
    update: dict[str, Any] = orjson.loads(fields[b"u"])
    fired = update.pop("fired", [])
    return update, fired


WHOLE = 2**31  # the part number of a position that covers its whole feed entry

PositionKey = tuple[int, int, int]


def position_key(position: str) -> PositionKey:
    """A feed position as a sortable triple; raises BadRequest.

    A position is a feed entry id `ms-seq`, meaning "everything up to and including that
    entry". When one commit fires several milestones, all but the last milestone message
    carry `ms-seq.k` (the k-th of that entry, from 0), so a client cut off between them
    resumes exactly after the last one it got.
    """
    entry, dot, part = position.partition(".")
    ms, sep, seq = entry.partition("-")
    if (
        not (ms.isdigit() and (not sep or seq.isdigit()) and (not dot or part.isdigit()))
        or len(position) > 48
    ):
        raise BadRequest(f"{position[:45]!r} is not a feed position (like 1732730000000-0)")
    return int(ms), int(seq or 0), int(part) if dot else WHOLE


def milestone_positions(position: str, count: int) -> list[str]:
    """The positions of the `count` milestone messages of the feed entry at `position`."""
    return [f"{position}.{k}" if k < count - 1 else position for k in range(count)]


@dataclass(frozen=True)
class Subscription:
    topics: frozenset[str] = ALL_TOPICS
    max_rate: float = MAX_RATE_HZ


def parse_request(raw: str) -> Subscription:
    """A client's `subscribe` message; raises BadRequest saying what is wrong."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("messages must be JSON objects") from None
    if not isinstance(msg, dict) or msg.get("type") != "subscribe":
        raise BadRequest('the only message a client sends is {"type": "subscribe", ...}')
    topics = msg.get("topics", sorted(TOPICS))
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise BadRequest("topics must be a list of strings")
    unknown = set(topics) - set(TOPICS)
    if unknown:
        raise BadRequest(f"unknown topics {sorted(unknown)}; choose from {sorted(TOPICS)}")
    rate = msg.get("max_rate", MAX_RATE_HZ)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 100:
        raise BadRequest("max_rate must be a number of updates per second, above 0")
    return Subscription(frozenset(topics) | {"totals"}, min(float(rate), MAX_RATE_HZ))
