"""The settings object: arguments win over the environment, which wins over defaults."""

from ticker.core.hold import HOLD_SECONDS
from ticker.settings import DEFAULT_REDIS_URL, Settings


def test_an_empty_environment_gives_the_defaults() -> None:
    """Nothing set: the local Redis, namespace main, the core's hold."""
    settings = Settings.from_env(env={})
    assert (settings.redis_url, settings.keys.namespace) == (DEFAULT_REDIS_URL, "main")
    assert settings.hold_seconds == HOLD_SECONDS


def test_the_environment_is_read_into_the_settings() -> None:
    """REDIS_URL, TICKER_NAMESPACE and TICKER_HOLD_SECONDS are taken from the mapping given."""
    env = {"REDIS_URL": "redis://h:1/0", "TICKER_NAMESPACE": "t", "TICKER_HOLD_SECONDS": "2"}
    settings = Settings.from_env(env=env)
    assert (settings.redis_url, settings.keys.namespace, settings.hold_seconds) == (
        "redis://h:1/0",
        "t",
        2.0,
    )


def test_arguments_win_over_the_environment() -> None:
    """An explicit URL and namespace are used whatever the environment says."""
    settings = Settings.from_env("redis://a:2/0", "n", env={"REDIS_URL": "redis://h:1/0"})
    assert (settings.redis_url, settings.keys.namespace) == ("redis://a:2/0", "n")
