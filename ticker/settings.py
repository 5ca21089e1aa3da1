"""Settings shared by every process, from arguments or the environment.

The environment is read here, once, at the command line's edge (`ticker.cli`); the
settings object is then passed to what needs it.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ticker.core.hold import HOLD_SECONDS
from ticker.keys import Keys

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    """Where Redis is, which ticker namespace to use, and how the aggregator waits."""

    redis_url: str = DEFAULT_REDIS_URL
    keys: Keys = field(default_factory=Keys)
    # How long an entry ahead of a missing seq is held before it is dead-lettered.
    hold_seconds: float = HOLD_SECONDS

    @classmethod
    def from_env(
        cls,
        redis_url: str | None = None,
        namespace: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Explicit values win, then REDIS_URL / TICKER_NAMESPACE / TICKER_HOLD_SECONDS,
        then the defaults."""
        env = os.environ if env is None else env
        url = redis_url or env.get("REDIS_URL") or DEFAULT_REDIS_URL
        ns = namespace or env.get("TICKER_NAMESPACE") or "main"
        hold = float(env.get("TICKER_HOLD_SECONDS") or HOLD_SECONDS)
        return cls(redis_url=url, keys=Keys(ns), hold_seconds=hold)
