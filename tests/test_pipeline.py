"""The whole pipeline through a real Redis: replay -> aggregator -> feed -> server."""

import asyncio
import json
import urllib.request

import orjson
import redis
import websockets

from simulator.profile import load
from tests.conftest import UNIT, Server, Ticker
from ticker.core import timeline
from ticker.keys import Keys

SCALED_GMV_FEN = 21_350_000_000  # RMB 213.5bn x 0.001
SCALED_ORDERS = 1_042_000


def state(server: Server) -> dict:
    with urllib.request.urlopen(server.url + "api/state", timeout=5) as resp:
        return json.load(resp)


async def test_miniature_day_is_exact_with_every_milestone_once_in_order(
    ticker: Ticker, server: Server
) -> None:
    """A 1/1000 day at max speed ends on the scaled totals, every milestone fired once."""
    ticker.miniature_day()
    s = await _wait_for(server, lambda s: s["ended"])
    assert s["gmv_fen"] == SCALED_GMV_FEN
    assert s["orders"] == SCALED_ORDERS
    fired = [m["id"] for m in s["milestones"]]
    profile = load("2018")
    assert sorted(fired) == sorted(m.id for m in profile.milestones)
    assert len(set(fired)) == len(fired)
    times = [m["sim_time_ms"] for m in s["milestones"]]
    assert times == sorted(times)
    gmv_thresholds = [m["threshold"] for m in s["milestones"] if m["metric"] == "gmv_fen"]
    assert gmv_thresholds == sorted(gmv_thresholds)
    assert s["upcoming"] == []
    assert [c["name"] for c in s["top_categories"]][:3] == [
        "Health Supplements",
        "Milk Powder",
        "Facial Masks",
    ]
    assert s["top_countries"][0]["name"] == "Japan"


async def _wait_for(server: Server, predicate, timeout: float = 15) -> dict:
    # A coroutine, not asyncio.run in a plain test: asyncio.run would replace (and leave
    # unclosed) the fresh event loop that pytest-asyncio (0.24 to 1.0 at least) sets after
    # each async test: a ResourceWarning, an error here, in whichever test GC runs.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout * UNIT
    while True:
        s = await loop.run_in_executor(None, state, server)
        if predicate(s) or loop.time() > deadline:
            return s
        await asyncio.sleep(0.1)


async def test_websocket_snapshot_then_rising_ticks_ending_at_api_state(
    ticker: Ticker, server: Server
) -> None:
    """A websocket client gets a snapshot, then ticks that never fall; the last is /api/state."""
    received: list[dict] = []
    async with websockets.connect(server.ws_url) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["protocol"] == 1
        snap = json.loads(await ws.recv())
        assert snap["type"] == "snapshot" and "position" in snap
        loop = asyncio.get_running_loop()
        run = loop.run_in_executor(None, ticker.miniature_day)
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30 * UNIT))
            received.append(msg)
            if msg["type"] == "tick" and msg["state"]["ended"]:
                break
        await run
    ticks = [m for m in received if m["type"] == "tick"]
    assert len(ticks) >= 3
    gmv = [t["state"]["gmv_fen"] for t in ticks]
    orders = [t["state"]["orders"] for t in ticks]
    assert gmv == sorted(gmv) and orders == sorted(orders)
    positions = [t["position"] for t in ticks]
    assert len(set(positions)) == len(positions)
    final = await asyncio.get_running_loop().run_in_executor(None, state, server)
    assert ticks[-1]["state"]["gmv_fen"] == final["gmv_fen"] == SCALED_GMV_FEN
    assert ticks[-1]["state"]["orders"] == final["orders"] == SCALED_ORDERS
    assert ticks[-1]["position"] == final["position"]
    milestones = [m["milestone"]["id"] for m in received if m["type"] == "milestone"]
    assert milestones == [m["id"] for m in final["milestones"]]


def test_the_day_s_curve_is_stored_whole_and_the_feed_carries_its_tail(ticker: Ticker) -> None:
    """After a day: the curve key holds every minute exactly; the last feed entry its tail."""
    ticker.miniature_day()
    keys = Keys(ticker.namespace)
    with redis.Redis.from_url(ticker.redis_url) as r:
        curve = orjson.loads(r.get(keys.curve) or b"[]")
        last = orjson.loads(r.xrevrange(keys.feed, count=1)[0][1][b"u"])
    assert [p[0] for p in curve] == list(range(0, 86_400_001, 60_000))
    assert curve[-1] == [86_400_000, SCALED_GMV_FEN, SCALED_ORDERS]
    assert last["curve"] == timeline.tail(curve, 0)
    assert len(last["sample_orders"]) == 8
