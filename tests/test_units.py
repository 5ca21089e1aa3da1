"""Pure pieces of the shells, fed plain values: replay clock, requests, limits, commands,
how long the aggregator's reads wait."""

import pytest

from simulator.clock import ReplayClock
from ticker.aggregator import Aggregator
from ticker.core.batch import End
from ticker.core.control import Seek, Speed, parse_command
from ticker.core.hold import Held
from ticker.feed import (
    ALL_TOPICS,
    BadRequest,
    milestone_positions,
    only,
    parse_request,
    position_key,
)
from ticker.guard import Policy, RateLimiter
from ticker.keys import Keys


def test_clock_pauses_resumes_and_changes_speed_without_skipping() -> None:
    """Pause stops the clock; resume and speed changes re-anchor at the moment reached."""
    clock = ReplayClock(anchor_wall=100.0, anchor_sim=0, speed=60)
    assert clock.due(60_000) == pytest.approx(101.0)
    clock.pause()
    assert clock.due(60_000) is None
    clock.resume(now=500.0, sim_ms=30_000)
    assert clock.due(90_000) == pytest.approx(501.0)
    clock.set_speed(None, now=600.0, sim_ms=90_000)
    assert clock.due(10**7) == 600.0
    assert clock.behind_ms(90_000, 700.0) == 0


def test_clock_says_how_far_behind_it_is() -> None:
    """At 10x, a replay still at 00:00:10 after 2 s of wall time is 10 s behind."""
    clock = ReplayClock(anchor_wall=0.0, anchor_sim=0, speed=10)
    assert clock.behind_ms(10_000, 2.0) == 10_000
    assert clock.speed_reached(10_000, 2.0) == pytest.approx(5.0)


def test_subscriptions_are_checked_and_filter_the_state() -> None:
    """A subscribe message picks topics and a rate; bad ones say what is wrong."""
    sub = parse_request('{"type": "subscribe", "topics": ["top"], "max_rate": 2}')
    assert sub.topics == {"top", "totals"} and sub.max_rate == 2
    state = {"gmv_fen": 1, "top_categories": [], "sample_orders": [], "replay": None}
    assert set(only(state, sub.topics)) == {"gmv_fen", "top_categories"}
    assert only(state, ALL_TOPICS) is state
    for raw, says in [
        ("nope", "JSON"),
        ('{"type": "hi"}', "subscribe"),
        ('{"type": "subscribe", "topics": ["x"]}', "unknown topics"),
        ('{"type": "subscribe", "max_rate": 0}', "max_rate"),
    ]:
        with pytest.raises(BadRequest, match=says):
            parse_request(raw)


def test_positions_sort_as_stream_ids() -> None:
    """Feed positions compare by time then sequence; junk is refused."""
    assert position_key("10-2") > position_key("9-99") > position_key("9-1")
    with pytest.raises(BadRequest):
        position_key("abc")


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    """An address may open two seconds' worth of connections at once, then the rate."""
    policy = Policy(connects_per_ip_per_s=2)
    limiter = RateLimiter(policy.connects_per_ip_per_s, policy.connect_burst)
    assert [limiter.allow("a", now=0.0) for _ in range(5)] == [True] * 4 + [False]
    assert limiter.allow("b", now=0.0)
    assert limiter.allow("a", now=0.5) and not limiter.allow("a", now=0.5)


def test_origin_policy() -> None:
    """No Origin (a program) and the server's own origin pass; others need listing."""
    policy = Policy(allowed_origins=frozenset({"https://wall.example"}))
    assert policy.origin_allowed(None, "h:1", "http")
    assert policy.origin_allowed("http://h:1", "h:1", "http")
    assert policy.origin_allowed("https://wall.example", "h:1", "http")
    assert not policy.origin_allowed("http://evil.example", "h:1", "http")


def test_control_commands_are_validated() -> None:
    """Replay commands are checked before they reach the simulator."""
    assert parse_command({"action": "speed", "speed": "max"}) == Speed(None)
    assert parse_command({"action": "seek", "to": "01:40"}) == Seek(6_000_000)
    for body, says in [
        ([], "JSON object"),
        ({"action": "jump"}, "action must be"),
        ({"action": "speed", "speed": -1}, "above 0"),
        ({"action": "seek", "to": "25:00"}, "past the end"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_command(body)


def test_several_milestones_of_one_commit_get_positions_to_resume_between() -> None:
    """All but the last milestone of a commit carry a part position that sorts before it."""
    at = milestone_positions("10-0", 3)
    assert at == ["10-0.0", "10-0.1", "10-0"]
    keys = [position_key(p) for p in ["9-5", *at, "10-1"]]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert milestone_positions("10-0", 1) == ["10-0"]


def test_a_burst_aggregator_stops_waiting_for_entries_once_its_run_has_ended() -> None:
    """Reads wait up to 100 ms in burst mode (1 s otherwise), not past a held entry's
    deadline; once the run has ended with nothing held, a burst read does not wait at all:
    what is in the stream is still applied, and if nothing is, it exits at once."""
    burst = Aggregator("redis://127.0.0.1:1/0", Keys("units"), burst=True)
    steady = Aggregator("redis://127.0.0.1:1/0", Keys("units"))
    assert (burst._block_ms(), steady._block_ms()) == (100, 1000)
    burst.state.ended = steady.state.ended = True
    assert (burst._block_ms(), steady._block_ms()) == (None, 1000)
    now = burst.clock()
    burst.hold.add(Held(b"1-0", {}, End("r", 9, 0), now - burst.hold.wait_s + 0.05))
    block = burst._block_ms()
    assert block is not None and 1 <= block <= 51
