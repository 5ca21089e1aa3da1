"""What the aggregator's and the merge step's commits share: the feed entry they add, and
running a commit script that the lease and the commit number fence (`ticker.lease.fence`).
The caps of the streams they write are declared beside the keys (`ticker.keys`)."""

from typing import Any

import orjson
from redis.exceptions import ResponseError

from ticker.core import timeline
from ticker.core.aggregate import Fired, State
from ticker.errors import FencedOff


def feed_payload(state: State, fired: list[Fired], changed_from: int | None = None) -> bytes:
    """A feed entry: the public state, the milestones this commit fired, and of the curve
    only its tail (the same commit writes the full curve to `Keys.curve`).

    A late order of a live run may change points the tail does not reach: given
    `changed_from` (the first point it changed), the tail starts there (`merge_tail` still
    joins)."""
    view = state.view()
    view["fired"] = [f.to_dict() for f in fired]
    tail = timeline.tail(view["curve"], view["from_ms"])
    if changed_from is not None:
        start = min(changed_from, tail[0][0]) if tail else changed_from
        tail = [p for p in view["curve"] if p[0] >= start]
    view["curve"] = tail
    return orjson.dumps(view)


async def run_fenced(script: Any, keys: list[str], args: list[Any], who: str) -> Any:
    """Run a commit script; FencedOff (naming `who`) when its fence refuses the commit."""
    try:
        return await script(keys=keys, args=args)
    except ResponseError as exc:
        if str(exc).startswith("FENCED"):
            raise FencedOff(
                f"another {who} committed first ({exc}); this one stops so nothing is counted twice"
            ) from None
        raise
