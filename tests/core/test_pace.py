"""The tick rate limit: the average holds, bursts are bounded, a same-rate feed never waits."""

import random

from ticker.core.pace import BURST, Pace


def test_a_quiet_limit_lets_a_burst_through_then_spaces_events() -> None:
    pace = Pace(rate=10)
    for _ in range(int(BURST)):
        assert pace.wait(0.0) == 0.0
        pace.take(0.0)
    assert abs(pace.wait(0.0) - 0.1) < 1e-9  # the third waits for one token
    assert abs(pace.wait(0.04) - 0.06) < 1e-9
    assert pace.wait(0.1) == 0.0


def test_a_feed_at_the_limit_with_jitter_is_never_held_back() -> None:
    """Entries at exactly the limit's rate, each up to 5 ms early or late: a minimum
    spacing would hold half of them back, and the delay would only grow."""
    rng = random.Random(7)
    pace = Pace(rate=10)
    for k in range(10_000):
        now = k / 10 + rng.uniform(-0.005, 0.005)
        assert pace.wait(now) == 0.0, k
        pace.take(now)


def test_a_faster_feed_is_held_to_the_rate_on_average() -> None:
    """Entries at 50/s, each passed at the first moment the limit allows: over any window of
    t seconds, at most rate * t + burst pass."""
    rate, pace, now, passed = 10.0, Pace(rate=10), 0.0, []
    while now < 20.0:
        now += pace.wait(now)
        pace.take(now)
        passed.append(now)
        now += 1 / 50
    assert abs(len(passed) - rate * 20) <= BURST + 1
    for i, start in enumerate(passed):
        for window in (0.1, 0.5, 1.0, 5.0):
            inside = sum(1 for t in passed[i:] if t < start + window)
            assert inside <= rate * window + BURST + 1e-9, (start, window, inside)


def test_a_lower_rate_set_later_applies_from_then_on() -> None:
    pace = Pace(rate=10)
    pace.take(0.0)
    pace.take(0.0)
    pace.rate = 2  # the client subscribed with max_rate 2
    assert abs(pace.wait(0.0) - 0.5) < 1e-9
