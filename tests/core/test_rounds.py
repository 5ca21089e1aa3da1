"""The aggregator's commit pacing: commit once the stream is idle, read on while entries
come, bounded rounds and commit rate (an injected clock: the times are plain numbers)."""

from ticker.core.rounds import COMMIT_ROUND, READ_NOW, Rounds


def test_a_drained_stream_commits_at_once() -> None:
    """A page that was not full (the stream is drained) commits: no fixed gap after the
    previous commit."""
    rounds = Rounds()
    rounds.committed(10.0)
    assert rounds.next_read(10.001, 10.001, entries=11, last_page=11) is COMMIT_ROUND


def test_a_round_reads_on_while_pages_come_full() -> None:
    """A full page means more is waiting: another read at once, without waiting."""
    rounds = Rounds(page=128)
    assert rounds.next_read(0.0, 0.0, entries=128, last_page=128) == READ_NOW


def test_a_backlog_grows_the_round_to_its_bounds() -> None:
    """Full pages keep coming: the round commits at its entry bound, or at its time bound."""
    rounds = Rounds(max_entries=512, max_seconds=0.1, page=128)
    assert rounds.next_read(0.0, 0.01, entries=384, last_page=128) == READ_NOW
    assert rounds.next_read(0.0, 0.01, entries=385, last_page=128) is COMMIT_ROUND
    assert rounds.next_read(0.0, 0.1, entries=200, last_page=128) is COMMIT_ROUND


def test_commits_faster_than_the_rate_wait_for_a_token() -> None:
    """After a burst of commits the next idle round waits (reading meanwhile) until the
    commit rate allows one, then commits."""
    rounds = Rounds(max_rate=20)
    rounds.committed(0.0)
    rounds.committed(0.0)  # the bucket's burst is spent
    wait = rounds.next_read(0.0, 0.0, entries=1, last_page=0)
    assert wait is not None and abs(wait - 0.05) < 1e-9
    assert rounds.next_read(0.0, 0.05, entries=1, last_page=0) is COMMIT_ROUND


def test_a_round_holding_a_run_s_end_commits_without_waiting_for_a_token() -> None:
    """Nothing follows a run's end: its round commits once the stream is drained, even
    when the commit rate would make it wait; while pages come full it still reads on."""
    rounds = Rounds(max_rate=20, page=128)
    rounds.committed(0.0)
    rounds.committed(0.0)  # the bucket's burst is spent
    wait = rounds.next_read(0.0, 0.0, entries=5, last_page=5)
    assert wait is not None and abs(wait - 0.05) < 1e-9
    assert rounds.next_read(0.0, 0.0, entries=5, last_page=5, ends_run=True) is COMMIT_ROUND
    assert rounds.next_read(0.0, 0.0, entries=128, last_page=128, ends_run=True) == READ_NOW


def test_a_commit_every_slot_at_1x_never_waits() -> None:
    """One commit per 100 ms slot, each up to 40 ms late or early: never held back."""
    rounds = Rounds()
    for k in range(1_000):
        now = k / 10 + (0.04 if k % 2 else -0.04)
        assert rounds.next_read(now, now, entries=11, last_page=0) is COMMIT_ROUND
        rounds.committed(now)
