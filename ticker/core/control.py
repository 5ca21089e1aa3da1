"""Replay control commands (pause, resume, speed, seek), validated. Pure.

Commands travel from `POST /api/replay` or `ticker control` to the simulator through the
capped stream `ticker:{NS}:control`, one JSON object per entry (field `c`). Each command
is a frozen dataclass (`Pause`, `Resume`, `Speed`, `Seek`); `encode_command` writes it and
`decode_command` reads it back, checked.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import orjson

from ticker.core.clock import DAY_MS, format_time_of_day, parse_time_of_day

MAX_SPEED = 1e6
MAX_ENTRY_BYTES = 1_024  # a control entry's `c` field; real commands are under 60 bytes


class BadCommand(ValueError):
    """A replay command that cannot be understood; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class _Command:
    ACTION: ClassVar[str]

    def wire(self) -> dict[str, Any]:
        """The command as a JSON object: its `action`, then its fields."""
        return {"action": self.ACTION, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True, slots=True)
class Pause(_Command):
    ACTION = "pause"


@dataclass(frozen=True, slots=True)
class Resume(_Command):
    ACTION = "resume"


@dataclass(frozen=True, slots=True)
class Speed(_Command):
    ACTION = "speed"
    speed: float | None  # simulated seconds per wall second; None: as fast as possible


@dataclass(frozen=True, slots=True)
class Seek(_Command):
    """Restart the replay as a new run from `to_ms` (ms since 00:00)."""

    ACTION = "seek"
    to_ms: int


Command = Pause | Resume | Speed | Seek


def encode_command(command: Command) -> bytes:
    """A control entry's `c` field."""
    return orjson.dumps(command.wire())


def _speed(speed: Any) -> float:
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= MAX_SPEED:
        raise BadCommand('speed must be a number above 0, or "max"')
    return float(speed)


def parse_command(body: Any) -> Command:
    """The command a request body asks for (`{"action": "pause" | "resume"}`, `{"action":
    "speed", "speed": number | "max"}` or `{"action": "seek", "to": "HH:MM[:SS]"}`); raises
    BadCommand saying what is wrong."""
    if not isinstance(body, dict):
        raise BadCommand('send a JSON object like {"action": "pause"}')
    action = body.get("action")
    if action == "pause":
        return Pause()
    if action == "resume":
        return Resume()
    if action == "speed":
        speed = body.get("speed")
        return Speed(None if speed == "max" else _speed(speed))
    if action == "seek":
        to = body.get("to")
        if not isinstance(to, str):
            raise BadCommand('seek needs "to": "HH:MM[:SS]"')
        try:
            return Seek(parse_time_of_day(to))
        except ValueError as exc:
            raise BadCommand(str(exc)) from None
    raise BadCommand("action must be pause, resume, speed or seek")


def decode_command(fields: Mapping[bytes, bytes]) -> Command:
    """The command of one control stream entry (as `encode_command` writes it), checked:
    `{"action": "pause" | "resume"}`, `{"action": "speed", "speed": float | None}` (None =
    max) or `{"action": "seek", "to_ms": int}` (0..DAY_MS).

    Raises BadCommand saying what is wrong, whatever the entry holds (anyone who can write
    to Redis can XADD to the control stream: the replay skips such entries)."""
    raw = fields.get(b"c")
    if not isinstance(raw, bytes):
        raise BadCommand("control entry has no field 'c'")
    if len(raw) > MAX_ENTRY_BYTES:
        raise BadCommand(f"control entry's 'c' is {len(raw)} bytes, above {MAX_ENTRY_BYTES}")
    try:
        command = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadCommand(f"control entry's 'c' is not JSON: {raw[:60]!r}") from None
    if not isinstance(command, dict):
        raise BadCommand(f"control entry's 'c' is not a JSON object: {raw[:60]!r}")
    action = command.get("action")
    if action == "pause":
        return Pause()
    if action == "resume":
        return Resume()
    if action == "speed":
        speed = command.get("speed", "missing")
        return Speed(None if speed is None else _speed(speed))
    if action == "seek":
        to_ms = command.get("to_ms")
        if isinstance(to_ms, bool) or not isinstance(to_ms, int) or not 0 <= to_ms <= DAY_MS:
            raise BadCommand(f"a seek needs to_ms, whole ms 0..{DAY_MS}; got {to_ms!r}"[:120])
        return Seek(to_ms)
    raise BadCommand(f"action must be pause, resume, speed or seek; got {action!r}"[:120])


# -- what the replay can obey ------------------------------------------------------------
#
# The replay writes its state to the hash `ticker:{NS}:replay` (field `state`, JSON) at
# least every HEARTBEAT_MS while it runs or is paused, and once more when the window has
# been written to the end: {"run", "state": "running" | "paused" | "ended", "speed" (None =
# max), "speed_reached", "behind_ms", "sim_time_ms", "from_ms", "to_ms" (this run's window),
# "window_from_ms", "window_to_ms" (the window a seek may target: the replay's first one),
# "heartbeat_ms" (wall clock, ms since the Unix epoch), "waiting" (None, or what the replay
# waits for, e.g. "aggregator")}. Readers pass it through `replay_status`, which turns a
# replay that stopped beating into the state "stopped".

HEARTBEAT_MS = 250  # how often a live replay writes its state
STALE_MS = 3_000  # no heartbeat for this long: the replay is gone


def replay_status(raw: Any, now_ms: int) -> dict[str, Any] | None:
    """The replay's state as screens and controls should see it at wall time `now_ms`
    (ms since the Unix epoch), or None if no replay ever wrote one (or it is not a dict).

    A running or paused replay whose heartbeat is older than STALE_MS is "stopped"."""
    if not isinstance(raw, dict) or raw.get("state") not in ("running", "paused", "ended"):
        return None
    status = dict(raw)
    beat = raw.get("heartbeat_ms")
    fresh = isinstance(beat, int) and not isinstance(beat, bool) and now_ms - beat <= STALE_MS
    if raw["state"] != "ended" and not fresh:
        status["state"] = "stopped"
    return status


def refusal(status: dict[str, Any] | None, command: Command) -> str | None:
    """Why nothing can obey `command` (a `parse_command` result) given the replay's
    `replay_status`, or None when the replay will obey it."""
    state = status.get("state") if status else None
    if state in (None, "stopped"):
        return (
            "no replay is running in this namespace; start one with `ticker replay` "
            "(or `ticker demo`)"
        )
    assert status is not None
    if state == "ended":
        return (
            f"the replay has ended (its window closed at "
            f"{format_time_of_day(int(status.get('to_ms', 0)), millis=False)}); "
            "start a new one with `ticker replay`"
        )
    if isinstance(command, Seek):
        lo = int(status.get("window_from_ms", status.get("from_ms", 0)))
        hi = int(status.get("window_to_ms", status.get("to_ms", 0)))
        to = command.to_ms
        if not lo <= to < hi:
            return (
                f"seek to {format_time_of_day(to, millis=False)} is outside this replay's "
                f"window ({format_time_of_day(lo, millis=False)} to "
                f"{format_time_of_day(hi, millis=False)}); choose a time within it"
            )
    return None
