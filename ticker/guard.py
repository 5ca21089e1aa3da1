"""Who may connect and control: tokens, Origin allow-list, connection limits. Pure."""

import hmac
import os
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Policy:
    """The server's safety settings; the defaults are safe for a public read-only feed."""

    feed_token: str | None = None  # when set, /ws and /api/state need it
    control_token: str | None = None  # /api/replay needs it; without one, control is off
    allowed_origins: frozenset[str] = frozenset()  # besides the server's own origin
    max_clients: int = 20_000
    connects_per_ip_per_s: float = 20.0

    @property
    def connect_burst(self) -> int:
        """New connections an address may open at once: two seconds' worth."""
        return max(1, int(2 * self.connects_per_ip_per_s))

    @classmethod
    def from_env(cls, **overrides: object) -> "Policy":
        origins = os.environ.get("TICKER_ALLOWED_ORIGINS", "")
        values: dict[str, object] = {
            "feed_token": os.environ.get("TICKER_FEED_TOKEN") or None,
            "control_token": os.environ.get("TICKER_CONTROL_TOKEN") or None,
            "allowed_origins": frozenset(o.strip() for o in origins.split(",") if o.strip()),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def origin_allowed(self, origin: str | None, host: str | None, scheme: str) -> bool:
        """Programs send no Origin; browsers may come from our own origin or a listed one."""
        if origin is None:
            return True
        return origin in self.allowed_origins or origin == f"{scheme}://{host}"


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def bearer(header: str | None) -> str | None:
    if header and header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return None


@dataclass
class RateLimiter:
    """A token bucket per client address for new connections."""

    rate: float
    burst: int
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self.buckets[key] = (tokens - 1 if allowed else tokens, now)
        if len(self.buckets) > 100_000:  # forget addresses whose buckets are full again
            full_after = self.burst / self.rate
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < full_after}
        return allowed
