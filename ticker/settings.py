"""Settings shared by every process, from arguments or the environment."""

import os
from dataclasses import dataclass, field

from ticker.keys import Keys

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    """Where Redis is and which ticker namespace to use."""

    redis_url: str = DEFAULT_REDIS_URL
    keys: Keys = field(default_factory=Keys)

    @classmethod
    def from_env(cls, redis_url: str | None = None, namespace: str | None = None) -> "Settings":
        """Explicit values win, then REDIS_URL / TICKER_NAMESPACE, then the defaults."""
        url = redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        ns = namespace or os.environ.get("TICKER_NAMESPACE") or "main"
        return cls(redis_url=url, keys=Keys(ns))
