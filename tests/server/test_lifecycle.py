"""The app's background parts (Redis client, writer threads, the hub's tasks) start and stop
with it, inside its cleanup context (STYLE.md item 7)."""

from tests.server.conftest import running
from ticker.guard import Policy
from ticker.keys import Keys
from ticker.server import FEED, HUB, Tuning, make_app


def test_making_the_app_starts_nothing() -> None:
    """No Redis client, no writer thread, no task before the app runs."""
    app = make_app("redis://127.0.0.1:1", Keys("x"), policy=Policy(), tuning=Tuning())
    assert app[FEED]._redis is None
    assert app[HUB].fanout.writers == [] and app[HUB].tasks == []


async def test_the_threads_and_the_redis_client_live_only_while_the_app_runs(
    redis_url: str, namespace: str
) -> None:
    """Running: a Redis client and send_threads - 1 writer threads; after cleanup, none."""
    async with running(redis_url, Keys(namespace), tuning=Tuning(send_threads=3)) as live:
        writers = list(live.hub.fanout.writers)
        assert len(writers) == 2 and all(t.is_alive() for t in writers)
        assert live.app[FEED]._redis is not None
    assert not any(t.is_alive() for t in writers) and live.hub.fanout.writers == []
    assert live.app[FEED]._redis is None and all(t.done() for t in live.hub.tasks)
