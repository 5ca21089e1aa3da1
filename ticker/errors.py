"""The ticker's errors.

    TickerError                 base of every error a user can cause or meet
    ├── UsageError              bad command-line input (exit code 2)
    ├── ProfileError            a festival profile file is invalid (exit code 2)
    ├── RedisUnavailable        Redis cannot be reached
    └── FencedOff               another aggregator committed since we loaded the state

Each message says what was wrong and what to do.
"""


class TickerError(Exception):
    """Base class of the ticker's errors."""

    exit_code = 1


class UsageError(TickerError):
    """A command-line argument is invalid."""

    exit_code = 2


class ProfileError(TickerError):
    """A profile file is missing a field or holds a wrong value."""

    exit_code = 2


class RedisUnavailable(TickerError):
    """Redis is not reachable at the configured URL."""


class FencedOff(TickerError):
    """This aggregator's view of the state is stale: another one has committed."""
