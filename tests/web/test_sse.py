"""`GET /sse` in Chromium: a real `EventSource` across a restart of `ticker serve`."""

from typing import Any

import redis

from tests.conftest import Ticker, serving
from tests.web.conftest import Tab, write
from ticker.keys import Keys
from ticker.redis_io import free_port

# Records every event the page's EventSource receives, and each time it opens.
LISTEN = """
() => {
  window.__events = [];
  window.__opens = 0;
  const es = new EventSource("/sse");
  es.onopen = () => { window.__opens += 1; };
  for (const type of ["hello", "snapshot", "tick", "milestone", "replay", "error"]) {
    es.addEventListener(type, (e) => {
      window.__events.push({ type, id: e.lastEventId, data: JSON.parse(e.data) });
    });
  }
}
"""


def events(tab: Tab) -> list[dict[str, Any]]:
    return list(tab.page.evaluate("window.__events"))


def test_event_source_resumes_across_a_server_restart_without_a_gap(
    ticker: Ticker, tab: Tab, feed_redis: "redis.Redis[bytes]"
) -> None:
    """The browser reconnects by itself; the milestone fired while the server was down
    arrives, then a recovered snapshot with the newest state."""
    keys, port = Keys(ticker.namespace), free_port()
    feed_redis.set(keys.epoch, "E1")
    first = write(feed_redis, keys, [], gmv_fen=100)
    with serving(ticker, port=port) as s:
        tab.page.goto(s.url + "healthz")
        tab.page.evaluate(LISTEN)
        tab.wait("window.__events.some((e) => e.type === 'snapshot')")
    fired = write(feed_redis, keys, ["m1"], gmv_fen=200)
    newest = write(feed_redis, keys, [], gmv_fen=300)
    with serving(ticker, port=port):
        # Generous: the browser retries on its own schedule, which backs off while a busy
        # machine takes long to start the server again.
        recovered = "window.__events.some((e) => e.type === 'snapshot' && e.data.recovered)"
        tab.wait(recovered, timeout=90)
    got = [(e["type"], e["id"]) for e in events(tab) if e["type"] != "hello"]
    assert got == [
        ("snapshot", f"E1/{first}"),
        ("milestone", f"E1/{fired}"),
        ("snapshot", f"E1/{newest}"),
    ]
    last = events(tab)[-1]["data"]
    assert (last["state"]["gmv_fen"], last["position"]) == (300, newest)
    assert tab.page.evaluate("window.__opens") == 2
