"""What the aggregator's and the merge step's commits share: the feed entry they add, and
running a commit script that the lease and the commit number fence (`ticker.lease.fence`).
The caps of the streams they write are declared beside the keys (`ticker.keys`)."""

from typing import Any

import orjson
from redis.exceptions import ResponseError

from ticker.core import timeline
from ticker.core.aggregate import Fired, State
from ticker.errors import FencedOff


def feed_payload(state: State, fired: list[Fired]) -> bytes:
    """A feed entry: the public state, the milestones this commit fired, and of the curve
    only its tail (the same commit writes the full curve to `Keys.curve`)."""
    view = state.view()
    view["fired"] = [f.to_dict() for f in fired]
    view["curve"] = timeline.tail(view["curve"], view["from_ms"])
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
