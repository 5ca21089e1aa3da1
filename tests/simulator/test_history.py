"""The day before a window (`ReplayMeta.history`) is what a replay from 00:00 folds."""

from fractions import Fraction

import pytest

from simulator import profile
from simulator.generator import DayPlan
from ticker.core.clock import DAY_MS, parse_time_of_day


def folded_from_midnight(scale: Fraction, before_ms: int, to_ms: int) -> list[tuple[int, int, int]]:
    """(ms, GMV fen, orders) at each whole minute before `before_ms`, folding the batches
    of a replay from 00:00 as the aggregator does."""
    plan = DayPlan(profile.load("2018"), scale, 0, to_ms)
    gmv, orders, minute, points = plan.base_gmv, plan.base_orders, 0, []
    for batch in plan.batches():
        while minute < min(batch.t1, before_ms):
            points.append((minute, gmv, orders))
            minute += 60_000
        gmv, orders = gmv + int(batch.columns["amt"].sum()), orders + batch.n
    while minute < before_ms:
        points.append((minute, gmv, orders))
        minute += 60_000
    return points


@pytest.mark.parametrize(
    ("scale", "window"),
    [
        ("0.001", ("02:00:30", "24:00")),
        ("0.00002", ("04:00", "04:20")),
        ("0.05", ("00:07", "00:09")),
    ],
)
def test_history_equals_a_replay_from_midnight_at_each_minute(
    scale: str, window: tuple[str, str]
) -> None:
    """Each history point is exactly what a replay from 00:00 has reached at that minute."""
    frm, to = (parse_time_of_day(t) for t in window)
    plan = DayPlan(profile.load("2018"), Fraction(scale), frm, to)
    history = plan.meta().history
    assert list(history) == folded_from_midnight(Fraction(scale), frm, to)
    assert history[0] == (0, 0, 0) and history[-1][0] == (frm - 1) // 60_000 * 60_000


def test_a_window_from_midnight_has_no_history() -> None:
    """A replay from 00:00 has no day before it."""
    plan = DayPlan(profile.load("2018"), Fraction(1, 1000), 0, DAY_MS)
    assert plan.meta().history == ()
