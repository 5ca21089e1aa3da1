"""A rate limit that does not lag behind a feed of the same rate. Pure: no I/O, no clock.

A minimum spacing (each tick at least 1/rate after the last) falls behind a feed that comes
at that very rate: an entry that arrives a millisecond early waits, the next one is measured
from that later tick, and the delay only ever grows, up to a whole interval (measured: a
10/s feed waited 45 ms on average for a 10/s limit). A token bucket keeps the same average,
at most `rate` a second, and lets an early one through: over any t seconds, at most
rate * t + burst events pass.
"""

from dataclasses import dataclass

BURST = 2.0  # events that may pass at once after a quiet spell


@dataclass(slots=True)
class Pace:
    rate: float  # events a second, on average
    burst: float = BURST
    tokens: float = BURST
    at: float = float("-inf")  # when `tokens` was counted (seconds, a monotonic clock)

    def _tokens(self, now: float) -> float:
        return min(self.burst, self.tokens + (now - self.at) * self.rate)

    def wait(self, now: float) -> float:
        """Seconds from `now` until an event may pass; 0 if it may pass now."""
        tokens = self._tokens(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, now: float) -> None:
        """Count an event passing at `now`."""
        self.tokens, self.at = self._tokens(now) - 1.0, now
