"""Feed messages, built from feed stream entries, and client requests. Pure: no I/O.

Each feed stream entry (written by the aggregator's commit) holds one field `u`: the full
public state after the commit plus `fired`, the milestones that commit fired. The entry id
is the feed position. The messages are declared in `ticker.core.messages` and documented
in docs/protocol.md and docs/feed.schema.json.
"""

import struct
from dataclasses import dataclass
from typing import Any

import orjson

from ticker import __version__
from ticker.core import view
from ticker.core.aggregate import State
from ticker.core.messages import (
    PROTOCOL,
    Delta,
    Error,
    Hello,
    Milestone,
    Replay,
    Snapshot,
    Subscribe,
    Tick,
)

# What /api/state and the snapshot show before any replay has been aggregated.
EMPTY_STATE: dict[str, Any] = {"curve": [], **State().view()}

# Subscription topics and the state fields each adds to ticks (declared with the fields in
# `ticker.core.view`); `totals` is always on.
TOPICS: dict[str, tuple[str, ...]] = view.TOPICS
ALL_TOPICS = frozenset(TOPICS)
MAX_RATE_HZ = 10.0
MAX_EPOCH = 64  # characters of an epoch a client may name (the feed's are 12)


class BadRequest(ValueError):
    """A client message the server cannot take; the text says what is wrong."""


def hello(epoch: str) -> Hello:
    return Hello(PROTOCOL, epoch, f"ticker {__version__}", sorted(TOPICS), MAX_RATE_HZ)


def snapshot(
    state: dict[str, Any], position: str, epoch: str, recovered: bool | None = None
) -> Snapshot:
    return Snapshot(position, epoch, state, recovered)


def tick(state: dict[str, Any], position: str) -> Tick:
    return Tick(position, state)


def delta(patch: dict[str, Any], position: str) -> Delta:
    """A delta tick: `patch` (`ticker.core.delta`) takes the state of the client's previous
    tick or delta to the one a full tick at `position` would carry."""
    return Delta(position, patch)


def milestone(fired: dict[str, Any], position: str) -> Milestone:
    return Milestone(position, fired)


def replay(status: dict[str, Any] | None) -> Replay:
    """The replay's state (`ticker.core.control.replay_status`) after it changed."""
    return Replay(status)


# Fields of the replay's status that move on every heartbeat: their change alone is no news
# (ticks carry them); any other change (state, speed, run, window, waiting) is pushed.
REPLAY_CLOCK_FIELDS = frozenset({"heartbeat_ms", "sim_time_ms", "behind_ms", "speed_reached"})


def replay_news(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """What of a replay status, when it changes, is worth a `replay` message."""
    if status is None:
        return None
    return {k: v for k, v in status.items() if k not in REPLAY_CLOCK_FIELDS}


def decode_replay(raw: bytes | None) -> Any:
    """The replay hash's `state` field as JSON, or None if absent or not JSON."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def error(code: str, message: str) -> Error:
    return Error(code, message)


def only(state: dict[str, Any], topics: frozenset[str]) -> dict[str, Any]:
    """The part of the state a subscription to `topics` receives."""
    if topics == ALL_TOPICS:
        return state
    keep = {field for t in topics | {"totals"} for field in TOPICS[t]}
    return {k: v for k, v in state.items() if k in keep}


def frame(opcode: int, payload: bytes) -> bytes:
    """A whole websocket frame (RFC 6455 section 5.2) carrying `payload`, as a server sends
    it: FIN set, this opcode, unmasked, no extension bits (so never compressed)."""
    n, first = len(payload), 0x80 | opcode
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65_536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """A whole text frame carrying `payload` (see `frame`).

    Built once per message and written as the same bytes to every client that gets it.
    """
    return frame(0x1, payload)


class BadFeedEntry(ValueError):
    """A feed stream entry that is not a state update (not written by an aggregator)."""


def parse_entry(fields: dict[bytes, bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state, milestones fired in this commit) from one feed stream entry; raises BadFeedEntry.

    The state's `curve` is the tail the entry carries (see `ticker.core.timeline`)."""
    raw = fields.get(b"u")
    if raw is None:
        raise BadFeedEntry(f"no field u (fields: {sorted(fields)[:5]})")
    try:
        update = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadFeedEntry(f"field u is not JSON ({exc})") from None
    if not isinstance(update, dict):
        raise BadFeedEntry("field u is not a JSON object")
    fired = update.pop("fired", [])
    if not isinstance(fired, list) or not all(isinstance(f, dict) and "id" in f for f in fired):
        raise BadFeedEntry("fired is not a list of milestones")
    if not is_curve(update.get("curve", [])):
        raise BadFeedEntry("curve is not a list of [sim_ms, gmv_fen, orders] points")
    if not isinstance(update.get("from_ms", 0), int):
        raise BadFeedEntry("from_ms is not an integer")
    return update, fired


def is_curve(value: Any) -> bool:
    """Whether `value` is a curve (or a tail): a list of [sim_ms, gmv_fen, orders] ints."""
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 3 and all(type(v) is int for v in p) for p in value
    )


def decode_curve(raw: bytes | None) -> list[list[int]]:
    """The full curve as stored at `Keys.curve` (JSON), or [] if absent or malformed."""
    if raw is None:
        return []
    try:
        curve = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return curve if is_curve(curve) else []


WHOLE = 2**31  # the part number of a position that covers its whole feed entry

PositionKey = tuple[int, int, int]


MAX_ID = 2**64 - 1  # Redis stream ids are two unsigned 64-bit numbers
MAX_POSITION = 52  # characters: `ms-seq.part` at their largest (20 + 1 + 20 + 1 + 10 digits)


def _number(text: str, limit: int) -> int | None:
    """A decimal of ASCII digits no larger than `limit` (not `①`, not `²`), else None."""
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        return None
    n = int(text)
    return n if n <= limit else None


def position_key(position: str) -> PositionKey:
    """A feed position as a sortable triple; raises BadRequest.

    A position is a feed entry id `ms-seq`, meaning "everything up to and including that
    entry". When one commit fires several milestones, all but the last milestone message
    carry `ms-seq.k` (the k-th of that entry, from 0), so a client cut off between them
    resumes exactly after the last one it got. Each number is ASCII digits within what a
    Redis stream id holds (and a part below WHOLE), so a valid position is a valid id.
    """
    if len(position) > MAX_POSITION:
        raise BadRequest(f"{position[:20]!r}… is not a feed position (too long)")
    entry, dot, part = position.partition(".")
    ms, sep, seq = entry.partition("-")
    key = (
        _number(ms, MAX_ID),
        _number(seq, MAX_ID) if sep else 0,
        _number(part, WHOLE - 1) if dot else WHOLE,
    )
    if key[0] is None or key[1] is None or key[2] is None:
        raise BadRequest(f"{position!r} is not a feed position (like 1732730000000-0)")
    return key[0], key[1], key[2]


def milestone_positions(position: str, count: int) -> list[str]:
    """The positions of the `count` milestone messages of the feed entry at `position`."""
    return [f"{position}.{k}" if k < count - 1 else position for k in range(count)]


@dataclass(frozen=True)
class Subscription:
    topics: frozenset[str] = ALL_TOPICS
    max_rate: float = MAX_RATE_HZ
    delta: bool = False  # ticks as patches of the previous one (`delta` messages)


def parse_request(raw: str) -> Subscription:
    """A client's `subscribe` message; raises BadRequest saying what is wrong."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("messages must be JSON objects") from None
    if not isinstance(msg, dict) or msg.get("type") != Subscribe.TYPE:
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
    wants_delta = msg.get("delta", False)
    if not isinstance(wants_delta, bool):
        raise BadRequest("delta must be true or false")
    return Subscription(frozenset(topics) | {"totals"}, min(float(rate), MAX_RATE_HZ), wants_delta)
