"""The day so far as a chart: cumulative GMV and orders at each whole simulated minute. Pure.

The full curve is `[[sim_ms, gmv_fen, orders], ...]`, rising in `sim_ms`: a point at the
window's start (the base it starts from), one at each whole simulated minute passed since,
and last the latest point (which may fall between minutes). At most ~1,441 points a day.

Feed entries and ticks carry only its tail (`tail`): the last `TAIL_POINTS` fixed points
and the latest. Anyone holding a curve folds a tail in with `merge_tail`, the rule that
docs/protocol.md states for clients; a tail that does not join on what they hold (they
missed a minute, e.g. while coalesced) says so, and they fetch the whole curve again.
"""

from collections.abc import Sequence

STEP_MS = 60_000  # one point per simulated minute
TAIL_POINTS = 32  # fixed points a tail carries (32 minutes: a coalesced tick at max speed)

Point = list[int]  # [sim_ms, gmv_fen, orders]


def is_fixed(point: Sequence[int], from_ms: int) -> bool:
    """Whether a point is one that stays: the window's start or a whole minute."""
    return point[0] == from_ms or point[0] % STEP_MS == 0


def tail(curve: Sequence[Point], from_ms: int) -> list[Point]:
    """The newest part of a curve: its last TAIL_POINTS fixed points, then the latest."""
    if not curve:
        return []
    fixed_seen, start = 0, len(curve)
    for i in range(len(curve) - 1, -1, -1):
        if is_fixed(curve[i], from_ms):
            fixed_seen += 1
            if fixed_seen > TAIL_POINTS:
                break
        start = i
    return [list(p) for p in curve[start:]]


def merge_tail(
    curve: Sequence[Point], new_tail: Sequence[Point], from_ms: int
) -> tuple[list[Point], bool]:
    """(the curve with `new_tail` folded in, whether it joined).

    The holder's fixed points before the tail's first point stay; its latest point is
    replaced by the tail's. The tail joins when it starts at the window's start, or no more
    than a minute after the last fixed point kept. When it does not join, the result is the
    tail alone (drawable, but missing minutes): fetch the whole curve again.
    """
    if not new_tail:
        return [list(p) for p in curve], True
    first = new_tail[0][0]
    kept = [list(p) for p in curve if p[0] < first and is_fixed(p, from_ms)]
    joined = first == from_ms or (bool(kept) and first - kept[-1][0] <= STEP_MS)
    if not joined:
        return [list(p) for p in new_tail], False
    return kept + [list(p) for p in new_tail], True
