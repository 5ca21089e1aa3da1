"""ticker.client.FeedClient and `ticker watch` against real `ticker serve` processes."""

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import UNIT, Server, Ticker, stop, wait_http
from tests.server.conftest import running
from tests.test_feed import WINDOW, WINDOW_MILESTONES, api_state
from ticker import client
from ticker.client import Error, FeedClient, Hello, Milestone, Snapshot, Tick
from ticker.guard import Policy
from ticker.keys import Keys
from ticker.redis_io import free_port


def test_parse_gives_typed_messages_and_refuses_unknown_ones() -> None:
    """parse() turns each message type into its dataclass; anything else is a ValueError."""
    hello = '{"type":"hello","protocol":1,"epoch":"e","server":"s","topics":[],"max_rate":4}'
    assert client.parse(hello) == Hello(1, "e", "s", [], 4)
    assert client.parse(
        '{"type":"snapshot","position":"1-0","epoch":"e","state":{},"recovered":true}'
    ) == Snapshot("1-0", "e", {}, True)
    assert client.parse('{"type":"tick","position":"2-0","state":{"a":1}}') == Tick("2-0", {"a": 1})
    assert client.parse('{"type":"error","code":"bad_request","message":"m"}') == Error(
        "bad_request", "m"
    )
    for bad in ('{"type":"gossip"}', "[1]"):
        with pytest.raises(ValueError):
            client.parse(bad)
    assert client.feed_url("http://h:1/") == "ws://h:1/ws"
    assert client.feed_url("https://h/x/ws?token=t") == "wss://h/x/ws?token=t"


async def test_a_wrong_feed_token_stops_the_client_instead_of_retrying(
    redis_url: str, namespace: str
) -> None:
    """A refused token is final: FeedClient raises InvalidStatus (websockets >= 14) at once."""
    async with running(redis_url, Keys(namespace), Policy(feed_token="T")) as live:
        with pytest.raises(InvalidStatus) as refused:
            async with asyncio.timeout(10 * UNIT):
                async for _ in FeedClient(live.ws_url, token="wrong"):
                    pass
    assert refused.value.response.status_code in (401, 403)


async def test_feed_client_rides_out_a_server_restart_without_gaps_or_duplicates(
    ticker: Ticker,
) -> None:
    """Restarting the server mid-replay: FeedClient reconnects, resumes, ends exactly."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    loop = asyncio.get_running_loop()

    def start_server() -> subprocess.Popen[str]:
        proc = ticker.start("serve", "--port", str(port))
        wait_http(url + "healthz")
        return proc

    server = await loop.run_in_executor(None, start_server)
    messages: list[Any] = []
    feed = FeedClient(url, max_backoff=1.0)
    agg = ticker.start("aggregate", "--burst")
    replay = ticker.start("replay", "--speed", "1000", *WINDOW)
    restarted = False
    try:

        async def consume() -> None:
            nonlocal server, restarted
            async for msg in feed:
                messages.append(msg)
                if isinstance(msg, Milestone) and not restarted:
                    restarted = True  # restart the server at the first milestone
                    await loop.run_in_executor(None, stop, server)
                    server = await loop.run_in_executor(None, start_server)
                if isinstance(msg, Tick | Snapshot) and msg.state["ended"]:
                    return

        await asyncio.wait_for(consume(), 60 * UNIT)
        final = await loop.run_in_executor(None, api_state, url)
    finally:
        for proc in (replay, agg, server):
            stop(proc)

    assert restarted
    assert isinstance(messages[0], Hello) and isinstance(messages[1], Snapshot)
    assert messages[1].recovered is None
    hellos = [i for i, m in enumerate(messages) if isinstance(m, Hello)]
    assert len(hellos) == 2, "one reconnect"
    resumed = next(m for m in messages[hellos[1] :] if isinstance(m, Snapshot))
    assert resumed.recovered is True
    seen = [m["id"] for m in messages[1].state["milestones"]]
    seen += [m.milestone["id"] for m in messages if isinstance(m, Milestone)]
    assert seen == [m["id"] for m in final["milestones"]] == WINDOW_MILESTONES
    last = messages[-1]
    assert last.state["gmv_fen"] == final["gmv_fen"] and last.position == final["position"]
    assert not any(isinstance(m, Error) for m in messages)


def test_watch_prints_the_final_gmv_of_a_finished_replay(ticker: Ticker, server: Server) -> None:
    """`ticker watch URL --until-ended` shows a finished replay's final GMV and exits 0."""
    # The window 23:58-24:00 of the miniature day starts from the day's cumulative totals,
    # so it ends on the whole day's RMB 213.5bn x 0.001 in a few seconds.
    ticker.miniature_day("--from", "23:58")
    assert api_state(server.url)["gmv_fen"] == 21_350_000_000
    result = subprocess.run(
        [sys.executable, "-m", "ticker", "watch", server.url, "--until-ended"],
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "213,500,000" in result.stdout, result.stdout


def test_watch_says_reconnecting_when_the_server_goes_away(ticker: Ticker, server: Server) -> None:
    """A server that went away: watch prints a visible reconnecting line and keeps trying."""
    watch = subprocess.Popen(
        [sys.executable, "-m", "ticker", "watch", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert watch.stdout is not None
        assert "GMV" in watch.stdout.readline()  # connected: the first screen
        stop(server.proc)
        line = watch.stdout.readline()
        assert f"lost the feed at {server.ws_url}" in line and "reconnecting" in line
        assert watch.poll() is None
    finally:
        stop(watch)
        if watch.stdout:
            watch.stdout.close()
