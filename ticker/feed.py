"""Feed messages, built from feed stream entries. Pure: no I/O here.

Each feed stream entry (written by the aggregator's commit) holds one field `u`: the full
public state after the commit plus `fired`, the milestones that commit fired. The entry id
is the feed position. The messages sent to clients are documented in docs/protocol.md.
"""

from typing import Any

import orjson

from ticker import __version__
from ticker.core.aggregate import State

PROTOCOL = 1


def hello(epoch: str) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL,
        "epoch": epoch,
        "server": f"ticker {__version__}",
    }


def snapshot(state: dict[str, Any], position: str, epoch: str) -> dict[str, Any]:
    return {"type": "snapshot", "position": position, "epoch": epoch, "state": state}


def tick(state: dict[str, Any], position: str) -> dict[str, Any]:
    return {"type": "tick", "position": position, "state": state}


def milestone(fired: dict[str, Any], position: str) -> dict[str, Any]:
    return {"type": "milestone", "position": position, "milestone": fired}


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def parse_entry(fields: dict[bytes, bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state, milestones fired in this commit) from one feed stream entry."""
    update: dict[str, Any] = orjson.loads(fields[b"u"])
    fired = update.pop("fired", [])
    return update, fired


# What /api/state and the snapshot show before any replay has been aggregated.
EMPTY_STATE: dict[str, Any] = State().view()
