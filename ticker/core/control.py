"""Replay control commands (pause, resume, speed, seek), validated. Pure.

Commands travel from `POST /api/replay` or `ticker control` to the simulator through the
capped stream `ticker:{NS}:control`, one JSON object per entry (field `c`).
"""

from typing import Any

from ticker.core.clock import parse_time_of_day

CONTROL_MAXLEN = 1_000  # commands kept in the control stream


def parse_command(body: Any) -> dict[str, Any]:
    """The command a request body asks for; raises ValueError saying what is wrong."""
    if not isinstance(body, dict):
        raise ValueError('send a JSON object like {"action": "pause"}')
    action = body.get("action")
    if action in ("pause", "resume"):
        return {"action": action}
    if action == "speed":
        speed = body.get("speed")
        if speed == "max":
            return {"action": "speed", "speed": None}
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= 1e6:
            raise ValueError('speed must be a number above 0, or "max"')
        return {"action": "speed", "speed": float(speed)}
    if action == "seek":
        to = body.get("to")
        if not isinstance(to, str):
            raise ValueError('seek needs "to": "HH:MM[:SS]"')
        return {"action": "seek", "to_ms": parse_time_of_day(to)}
    raise ValueError("action must be pause, resume, speed or seek")
