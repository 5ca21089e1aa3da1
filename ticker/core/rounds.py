"""When the aggregator commits a round: as soon as the stream has nothing more waiting.

Pure: no I/O, no clock (the caller passes the time). A round starts with a read that
waited for at least one entry; then, after each page read, `next_read` says what to do:

- read again at once (no wait) while the last page was full: more is waiting;
- commit when a page was not full: the stream is drained, so nothing waits for a gap
  (the replay writes each flush as one transaction, so a 1x slot arrives whole);
- commit when the round holds `max_entries` or has read for `max_seconds`: under a
  backlog rounds grow to these bounds by themselves, so the commits' fixed cost is shared
  by more orders exactly when orders come faster;
- but never more than `max_rate` commits a second on average (a token bucket, `Pace`):
  when the bucket is empty the round keeps reading (waiting at most until a commit may
  go), so a burst of small commits cannot outrun what the servers send (they tick at 10
  per second) nor the feed's length in time. A commit after a quiet spell never waits,
  nor one that holds a run's end: nothing follows it, so waiting would only delay the end.
"""

from dataclasses import dataclass, field

from ticker.core.pace import Pace

READ_COUNT = 128  # entries a read asks for
ROUND_MAX_ENTRIES = 4 * READ_COUNT  # a round stops reading when one more page could pass this
ROUND_SECONDS = 0.1  # and when it has read this long
# Commits a second at most, on average: twice the servers' tick rate, so a feed of one
# commit per 100 ms slot (a 1x replay) always has a token spare for its jitter.
COMMIT_MAX_RATE = 20.0

READ_NOW = 0.0  # `next_read`: read again without waiting
COMMIT_ROUND = None  # `next_read`: commit the round


@dataclass(slots=True)
class Rounds:
    """The pacing of one aggregator's rounds: when to read on, when to commit."""

    max_rate: float = COMMIT_MAX_RATE
    max_entries: int = ROUND_MAX_ENTRIES
    max_seconds: float = ROUND_SECONDS
    page: int = READ_COUNT
    pace: Pace = field(init=False)

    def __post_init__(self) -> None:
        self.pace = Pace(self.max_rate)

    def next_read(
        self, started: float, now: float, entries: int, last_page: int, ends_run: bool = False
    ) -> float | None:
        """After a page of `last_page` entries, `entries` in the round begun at `started`
        (`ends_run`: one of them is a run's end): COMMIT_ROUND (None), READ_NOW (read again
        at once), or how many seconds the next read may wait for more (the commit rate's
        bucket is empty; commit when it returns)."""
        if entries + self.page > self.max_entries or now - started >= self.max_seconds:
            return COMMIT_ROUND
        if last_page >= self.page:
            return READ_NOW
        if ends_run:
            return COMMIT_ROUND
        wait = self.pace.wait(now)
        return wait if wait > 0 else COMMIT_ROUND

    def committed(self, now: float) -> None:
        """Count a commit made at `now`."""
        self.pace.take(now)
