"""The day's curve: tails and how a holder folds them in."""

from ticker.core.timeline import STEP_MS, TAIL_POINTS, merge_tail, tail


def _day(minutes: int, from_ms: int = 0, latest: int = 30_000) -> list[list[int]]:
    points = [[from_ms + m * STEP_MS, m * 100, m] for m in range(minutes + 1)]
    return [*points, [points[-1][0] + latest, minutes * 100 + 50, minutes]]


def test_a_tail_is_the_last_fixed_points_and_the_latest() -> None:
    """A tail keeps TAIL_POINTS whole minutes and the latest point."""
    curve = _day(100)
    t = tail(curve, 0)
    assert len(t) == TAIL_POINTS + 1
    assert t[-1] == curve[-1] and t[0] == curve[-TAIL_POINTS - 1]


def test_folding_consecutive_tails_rebuilds_the_whole_curve() -> None:
    """Tails folded in order as the curve grows give the whole curve."""
    held: list[list[int]] = []
    for m in range(0, 90, 7):
        held, joined = merge_tail(held, tail(_day(m), 0), 0)
        assert joined
    assert held == _day(84)


def test_a_tail_after_a_missed_minute_does_not_join() -> None:
    """A holder that missed more than the tail covers is told to fetch the whole curve."""
    held = _day(10)
    later = tail(_day(10 + TAIL_POINTS + 5), 0)
    merged, joined = merge_tail(held, later, 0)
    assert not joined and merged == later


def test_a_window_that_starts_between_minutes_keeps_its_first_point() -> None:
    """A window from 01:40:30 starts its curve there; the whole minutes follow."""
    start = 100 * STEP_MS + 30_000
    curve = [[start, 5, 1], [101 * STEP_MS, 9, 2], [101 * STEP_MS + 500, 10, 3]]
    merged, joined = merge_tail([], tail(curve, start), start)
    assert joined and merged == curve
    assert merge_tail(curve[:2], [[101 * STEP_MS, 9, 2], [101 * STEP_MS + 900, 11, 4]], start) == (
        [[start, 5, 1], [101 * STEP_MS, 9, 2], [101 * STEP_MS + 900, 11, 4]],
        True,
    )
