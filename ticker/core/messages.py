"""The feed's messages, declared once: what the server sends (hello, snapshot, tick,
delta, milestone, replay, error) and what a client sends (subscribe). Pure.

Each message is a frozen dataclass. The server builds one and sends `encode()` (its JSON
text: `type` first, then `position` where it has one, as the SSE writer reads them from the
start of the text); a client turns received text back into the same class with `decode`.
Ticks are encoded once per feed entry and subscription kind, never per client. The state
inside snapshots and ticks is declared field by field in `ticker.core.view`;
tests/core/test_messages.py checks these declarations against docs/feed.schema.json.
"""

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import orjson

PROTOCOL = 1
ERROR_CODES = ("bad_request",)  # the `code` of an error message
OMIT_NONE = {"omit_none": True}  # a field's metadata: absent on the wire while None


@dataclass(frozen=True, slots=True)
class _Message:
    """What every message has: its `type` on the wire, its fields in order, and fields that
    are left out while None (`omit_none` in their metadata)."""

    TYPE: ClassVar[str]

    def wire(self) -> dict[str, Any]:
        """The message as a JSON object."""
        out: dict[str, Any] = {"type": self.TYPE}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or not f.metadata.get("omit_none"):
                out[f.name] = value
        return out

    def encode(self) -> bytes:
        """The message's JSON text, as sent."""
        return orjson.dumps(self.wire())

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        """The message from its JSON object; ValueError naming a missing field. Fields this
        declaration does not know (a newer server's) are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in m:
                values[f.name] = m[f.name]
            elif not f.metadata.get("omit_none"):
                raise ValueError(f"a {cls.TYPE} message needs {f.name!r}")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """First message of every connection: the protocol, the feed's epoch, what it offers."""

    TYPE = "hello"
    protocol: int
    epoch: str
    server: str
    topics: list[str]
    max_rate: float  # ticks per second at most


@dataclass(frozen=True, slots=True)
class Snapshot(_Message):
    """The whole state at `position`; `recovered` only on a resume."""

    TYPE = "snapshot"
    position: str
    epoch: str
    state: dict[str, Any]
    recovered: bool | None = field(default=None, metadata=OMIT_NONE)  # None on a fresh connection


@dataclass(frozen=True, slots=True)
class Tick(_Message):
    """The state after a feed entry: the subscribed topics' fields."""

    TYPE = "tick"
    position: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delta(_Message):
    """A delta tick: `patch` (`ticker.core.delta`) takes the state of the client's previous
    tick or delta to the one a full tick at `position` would carry."""

    TYPE = "delta"
    position: str
    patch: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Milestone(_Message):
    """A milestone fired (never coalesced away)."""

    TYPE = "milestone"
    position: str
    milestone: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replay(_Message):
    """The replay's state changed (paused, resumed, speed, seek, ended, stopped); it
    carries no position (see docs/protocol.md)."""

    TYPE = "replay"
    replay: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Error(_Message):
    """The answer to a bad client message; `code` is one of ERROR_CODES."""

    TYPE = "error"
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Subscribe(_Message):
    """A client's choice of topics and rate (both optional: all topics, the top rate)."""

    TYPE = "subscribe"
    topics: list[str] | None = field(default=None, metadata=OMIT_NONE)
    max_rate: float | None = field(default=None, metadata=OMIT_NONE)
    delta: bool | None = field(default=None, metadata=OMIT_NONE)  # True: delta ticks


ServerMessage = Hello | Snapshot | Tick | Delta | Milestone | Replay | Error
SERVER_MESSAGES: dict[str, type[ServerMessage]] = {
    c.TYPE: c for c in (Hello, Snapshot, Tick, Delta, Milestone, Replay, Error)
}
CLIENT_MESSAGES: dict[str, type[Subscribe]] = {Subscribe.TYPE: Subscribe}


def decode(raw: str | bytes) -> ServerMessage:
    """A server's message as its typed value; ValueError for anything else."""
    m = orjson.loads(raw)
    kind = m.get("type") if isinstance(m, dict) else None
    cls = SERVER_MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown feed message type {kind!r}")
    return cls.from_wire(m)
