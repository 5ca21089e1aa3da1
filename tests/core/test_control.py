"""Which replay commands can be obeyed, judged from the replay's heartbeat state."""

from ticker.core.control import STALE_MS, parse_command, refusal, replay_status

NOW = 1_800_000_000_000


def _raw(state: str = "running", beat: int = NOW, **more: int) -> dict[str, object]:
    return {"state": state, "heartbeat_ms": beat, "from_ms": 0, "to_ms": 86_400_000, **more}


def test_a_replay_that_stopped_beating_is_stopped() -> None:
    """Running or paused without a heartbeat for STALE_MS reads as stopped; ended stays ended."""
    assert replay_status(_raw(beat=NOW - STALE_MS - 1), NOW)["state"] == "stopped"  # type: ignore[index]
    assert replay_status(_raw("paused", beat=NOW - 10), NOW)["state"] == "paused"  # type: ignore[index]
    assert replay_status(_raw("ended", beat=0), NOW)["state"] == "ended"  # type: ignore[index]
    assert replay_status(None, NOW) is None and replay_status("junk", NOW) is None


def test_commands_nothing_can_obey_are_refused_with_the_reason() -> None:
    """No replay, a stopped one or an ended one refuses every command, saying why."""
    pause = parse_command({"action": "pause"})
    assert "no replay is running" in (refusal(None, pause) or "")
    assert "no replay is running" in (refusal(replay_status(_raw(beat=0), NOW), pause) or "")
    assert "has ended" in (refusal(replay_status(_raw("ended"), NOW), pause) or "")
    assert refusal(replay_status(_raw(), NOW), pause) is None


def test_a_seek_outside_the_window_is_refused() -> None:
    """Seeks must land inside the replay's first window; 24:00 never can."""
    status = replay_status(_raw(window_from_ms=3_600_000, window_to_ms=7_200_000), NOW)
    assert refusal(status, parse_command({"action": "seek", "to": "01:30"})) is None
    assert "outside" in (refusal(status, parse_command({"action": "seek", "to": "00:30"})) or "")
    assert "outside" in (refusal(status, parse_command({"action": "seek", "to": "02:00"})) or "")
    day = replay_status(_raw(), NOW)
    assert "outside" in (refusal(day, parse_command({"action": "seek", "to": "24:00"})) or "")
