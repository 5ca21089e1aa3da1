"""The reconnect rule every loop shares: capped exponential backoff with jitter, and an
outage logged once when it starts and once when it ends."""

import logging

import pytest

from ticker.supervise import Backoff, Outage


def test_backoff_doubles_up_to_its_cap_within_the_jitter() -> None:
    """Each wait is the delay ±50%, and the delay doubles until it reaches the cap."""
    backoff = Backoff(first=0.1, cap=0.5)
    bases = [0.1, 0.2, 0.4, 0.5, 0.5]
    for base in bases:
        assert base * 0.5 <= backoff.next() <= base * 1.5


def test_backoff_starts_over_after_a_reset() -> None:
    """After a success the next wait is short again."""
    backoff = Backoff(first=0.1, cap=5.0, jitter=0.0)
    for _ in range(6):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.1


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many failed attempts make one warning; the first success makes one info line."""
    outage = Outage(logging.getLogger("test.outage"), "down (%s: %s)", "back after %.1fs")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(3):
            outage.started(ConnectionError("refused"))
        outage.ended()
        outage.ended()
    assert [r.getMessage().split(" ")[0] for r in caplog.records] == ["down", "back"]
    assert "ConnectionError: refused" in caplog.records[0].getMessage()
