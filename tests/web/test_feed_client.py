"""web/feed-client.js in Chromium: the embed example on another origin, the fallback to
SSE when websockets are blocked, and resuming across a restart of `ticker serve`."""

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.conftest import Ticker, serving
from tests.web.conftest import Tab, write
from ticker.keys import Keys
from ticker.redis_io import free_port

ROOT = Path(__file__).resolve().parent.parent.parent

# Installed before the page: every websocket goes to a path nothing answers (a proxy that
# refuses the upgrade).
BLOCK_WS = """
window.WebSocket = class extends WebSocket {
  constructor(url, protocols) { super(String(url).replace(/\\/ws(\\?|$)/, "/no-ws$1"), protocols); }
};
"""

# A FeedClient on the ticker's own /healthz page, recording snapshots and milestones.
LISTEN = """
(transport) => import("/feed-client.js").then(({ FeedClient }) => {
  window.__got = [];
  const feed = (window.feed = new FeedClient("/", { transport }));
  for (const type of ["snapshot", "milestone"]) {
    feed.on(type, (m) => window.__got.push([type, m.position, m.recovered ?? null]));
  }
  feed.start();
})
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """Another origin (a static server on its own port) serving docs/embed.html beside a
    copy of web/feed-client.js, as another site would."""
    shutil.copy(ROOT / "docs" / "embed.html", tmp_path)
    shutil.copy(ROOT / "web" / "feed-client.js", tmp_path)
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


def test_the_embed_page_on_another_origin_shows_the_running_total(
    ticker: Ticker, tab: Tab, feed_redis: "redis.Redis[bytes]", other_site: str
) -> None:
    """docs/embed.html, served from another origin, shows the feed's total as it grows."""
    keys = Keys(ticker.namespace)
    write(feed_redis, keys, [], gmv_fen=12_300)
    with serving(ticker, "--allow-origin", other_site) as s:
        tab.page.goto(f"{other_site}/embed.html?ticker={s.url}")
        tab.wait("document.getElementById('gmv').textContent === '¥123'")
        write(feed_redis, keys, [], gmv_fen=4_567_800)
        tab.wait("document.getElementById('gmv').textContent === '¥45,678'")
        assert tab.text("status") == "live"
    assert tab.errors == []


def test_the_page_falls_back_to_sse_when_websockets_are_blocked(
    ticker: Ticker, tab: Tab, feed_redis: "redis.Redis[bytes]"
) -> None:
    """With every websocket refused, the page goes live over /sse and follows the feed."""
    keys = Keys(ticker.namespace)
    write(feed_redis, keys, [], gmv_fen=12_300)
    tab.page.add_init_script(BLOCK_WS)
    with serving(ticker) as s:
        tab.open(s.url)
        assert tab.page.evaluate("window.tickerView.transport") == "sse"
        write(feed_redis, keys, [], gmv_fen=4_567_800)
        tab.wait("document.getElementById('gmv').textContent === '¥45,678'")


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_client_resumes_across_a_server_restart(
    ticker: Ticker, tab: Tab, feed_redis: "redis.Redis[bytes]", transport: str
) -> None:
    """After a restart the client gets the milestone it missed, then a recovered snapshot."""
    keys, port = Keys(ticker.namespace), free_port()
    feed_redis.set(keys.epoch, "E1")
    first = write(feed_redis, keys, [], gmv_fen=100)
    with serving(ticker, port=port) as s:
        tab.page.goto(s.url + "healthz")
        tab.page.evaluate(LISTEN, transport)
        tab.wait("window.feed.status === 'live'")
    fired = write(feed_redis, keys, ["m1"], gmv_fen=200)
    newest = write(feed_redis, keys, [], gmv_fen=300)
    with serving(ticker, port=port):
        # A browser's EventSource, and the client's own backoff (up to 5 s), keep trying
        # while a busy machine restarts the server: a generous wait.
        tab.wait("window.feed.status === 'resumed'", timeout=90)
    got = tab.page.evaluate("window.__got")
    missed = [["milestone", fired, None], ["snapshot", newest, True]]
    assert got == [["snapshot", first, None], *missed]
    last = tab.page.evaluate("[window.feed.state.gmv_fen, window.feed.transport]")
    assert last == [300, transport]
