"""The web page in a real (headless) Chromium against the real server and pipeline."""

import json
import subprocess
import time
import urllib.request

from tests.conftest import UNIT, Server, Ticker, stop, wait_http
from tests.web.conftest import Tab, yuan
from ticker.redis_io import free_port

DAY_GMV = "¥213,500,000"  # RMB 213.5bn x 0.001, whole yuan
DAY_ORDERS = "1,042,000"


def api_state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=5) as resp:
        return json.load(resp)


def assert_never_falls(tab: Tab) -> None:
    for element_id in ("gmv", "orders"):
        values = [yuan(t) for t in tab.seen(element_id)]
        assert values == sorted(values), f"#{element_id} went down: {values}"


def finish(ticker: Ticker, *procs: subprocess.Popen[str], timeout: float = 60) -> None:
    for proc in procs:
        proc.wait(timeout * UNIT)
        assert proc.returncode == 0, ticker.output(proc)


def test_page_loads_without_errors_and_shows_the_snapshot(server: Server, tab: Tab) -> None:
    """The page loads with no console errors, goes live and shows the server's snapshot."""
    tab.open(server.url)
    assert tab.page.evaluate("typeof window.tickerState === 'object' && !!window.tickerState")
    assert tab.page.evaluate("window.tickerState.gmv_fen") == 0
    assert tab.text("gmv") == "¥0"
    assert tab.text("orders") == "0"
    assert tab.text("clock") == "00:00:00"
    assert tab.milestone_ids() == []
    assert tab.seen("status")[-1] == "live"
    assert tab.errors == []


def test_midnight_rush_is_shown_live(ticker: Ticker, server: Server, tab: Tab) -> None:
    """In the midnight rush (before 00:10) the page shows the first milestones as they fire."""
    tab.open(server.url)
    agg = ticker.start("aggregate", "--burst")
    replay = ticker.start(
        "replay", "--scale", "0.001", "--speed", "100", "--to", "00:06", "--quiet"
    )
    try:
        # RMB 19.1bn (x 0.001) is passed at 00:04:19.99; the milestone message comes before
        # the tick that carries the totals, so wait for both.
        tab.wait(
            "document.querySelector('#milestones li[data-id=gmv_19_1bn]') !== null"
            " && document.getElementById('clock').textContent >= '00:04:20'"
            " && +document.getElementById('gmv').textContent.replace(/\\D/g, '')"
            " >= 19100000"
        )
        clock = tab.text("clock")
        tab.screenshot("midnight-rush.png")
        assert clock < "00:10:00"
        assert tab.milestone_ids() == ["gmv_1bn", "gmv_10bn", "gmv_19_1bn"]
        finish(ticker, replay, agg)
        tab.wait_ended()
    finally:
        stop(replay)
        stop(agg)
    state = api_state(server.url)
    assert yuan(tab.text("gmv")) == state["gmv_fen"] // 100
    assert yuan(tab.text("orders")) == state["orders"]
    assert_never_falls(tab)
    assert tab.errors == []


def test_page_resumes_after_a_server_restart_and_ends_exact(ticker: Ticker, tab: Tab) -> None:
    """When the server restarts mid-replay the page reconnects, never counts back, ends exact."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    serve = ticker.start("serve", "--port", str(port))
    agg = ticker.start("aggregate", "--burst")
    replay = None
    try:
        wait_http(url + "healthz")
        tab.open(url)
        # The day from 18:00 (starting from the totals at 18:00) at 1000x: about 22 s, long
        # enough to pause it on a busy machine; it still ends on the day's total.
        replay = ticker.start(
            "replay", "--scale", "0.001", "--from", "18:00", "--speed", "1000", "--quiet"
        )
        tab.wait("document.getElementById('gmv').textContent !== '¥0'")
        # Paused while the server is away, so that a busy machine's slow restart cannot
        # outlast the replay (the control stream is in Redis, not in the server).
        # (refused until the replay's heartbeat says it runs: try until it is taken)
        deadline = time.monotonic() + 30 * UNIT
        while ticker.run("control", "pause").returncode != 0:
            assert time.monotonic() < deadline, "the replay never took the pause"
            time.sleep(0.2)
        # Killed, not stopped: `ticker serve` closes its websockets only after aiohttp has
        # waited for their handlers, so with a page connected SIGTERM takes 15-30 s.
        serve.kill()
        serve.wait()
        tab.wait_status("reconnecting")
        serve = ticker.start("serve", "--port", str(port))
        wait_http(url + "healthz")
        assert replay.poll() is None, "the replay ended before the server was back"
        tab.wait_status("live", timeout=60)
        # The rest of the day at 4000x (about 5 s; the page still watches it tick by tick).
        assert ticker.run("control", "speed", "4000").returncode == 0
        assert ticker.run("control", "resume").returncode == 0
        finish(ticker, replay, agg)
        tab.wait_ended()
        assert tab.text("gmv") == DAY_GMV
        assert tab.text("orders") == DAY_ORDERS
        statuses = tab.seen("status")
        assert statuses[-1] == "live"
        assert "reconnecting" in statuses
        assert_never_falls(tab)
        assert tab.milestone_ids() == [m["id"] for m in api_state(url)["milestones"]]
        view = tab.page.evaluate("window.tickerView.chart")  # the whole window, reconnect or not
        assert (view["firstMs"], view["lastMs"]) == (18 * 3_600_000, 86_400_000)
    finally:
        serve.kill()  # the page is still connected: see above
        serve.wait()
        for proc in (replay, agg):
            if proc is not None:
                stop(proc)
    # Chromium logs the refused reconnection attempts (and a request cut by the kill);
    # nothing else may go wrong.
    outage = ("WebSocket connection to", "Failed to load resource: net::ERR_CONNECTION")
    unexpected = [e for e in tab.errors if not any(o in e for o in outage)]
    assert unexpected == []
