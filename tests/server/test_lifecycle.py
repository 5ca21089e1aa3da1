"""The app's background parts (Redis client, writer threads, the hub's tasks) start and stop
with it, inside its cleanup context (STYLE.md item 7)."""

import contextlib
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.server.conftest import Live, Proxy, recv, running
from ticker.guard import Policy
from ticker.keys import Keys
from ticker.server import FEED, HUB, Tuning, make_app
from ticker.server import hub as hub_module
from ticker.server.connection import NOT_READY
from ticker.server.sse import RETRY_MS


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


# -- a viewer who connects while the server starts ----------------------------------------


@contextlib.asynccontextmanager
async def starting(redis_url: str, keys: Keys) -> AsyncIterator[tuple[Live, Proxy]]:
    """A server that cannot reach Redis yet (the proxy to it is cut) and has not read the
    feed; `proxy.start()` lets it."""
    proxy = Proxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    await proxy.cut()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        async with running(redis_url, keys, server_redis_url=url, ready=False) as live:
            yield live, proxy
    finally:
        if proxy.server is not None and proxy.server.is_serving():
            await proxy.cut()


async def test_a_viewer_connecting_before_the_feed_is_read_gets_the_real_state(
    redis_url: str, namespace: str
) -> None:
    """No empty snapshot at position 0-0: the greeting waits for the server's first read of
    the feed, then carries its epoch and newest state (a page reloading during a restart)."""
    keys = Keys(namespace)
    async with starting(redis_url, keys) as (live, proxy):
        await live.redis.set(keys.epoch, "E1")
        position = await live.write(gmv_fen=700)
        async with websockets.connect(live.ws_url) as ws:
            with pytest.raises(TimeoutError):  # nothing is said before the feed is read
                await recv(ws, timeout=0.5)
            await proxy.start()
            hello, snapshot = await recv(ws, timeout=15), await recv(ws)
    assert (hello["type"], hello["epoch"]) == ("hello", "E1")
    assert (snapshot["type"], snapshot["position"]) == ("snapshot", position)
    assert snapshot["state"]["gmv_fen"] == 700


async def test_a_server_that_cannot_read_the_feed_sends_clients_away_to_retry(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still unread after LOAD_WAIT_S: a websocket is closed with 1013 (try again later), an
    SSE stream ends after its retry hint (EventSource reconnects by itself), /api/state is
    503; each says why, and /metrics counts them."""
    monkeypatch.setattr(hub_module, "LOAD_WAIT_S", 0.3)
    async with starting(redis_url, Keys(namespace)) as (live, _):
        async with websockets.connect(live.ws_url) as ws:
            with pytest.raises(ConnectionClosed):
                await recv(ws, timeout=15)
        assert ws.close_code == 1013 and ws.close_reason == NOT_READY.decode()
        async with live.http.get(live.url + "sse") as resp:
            assert resp.status == 200
            assert await resp.read() == f"retry: {RETRY_MS}\n\n".encode()
        status, body = await live.get("api/state")
        assert (status, body["error"]) == (503, "not_ready")
        async with live.http.get(live.url + "metrics") as resp:
            metrics = await resp.text()
        assert 'ticker_disconnects_total{reason="not_ready"} 2' in metrics
