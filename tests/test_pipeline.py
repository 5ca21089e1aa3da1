"""The whole pipeline through a real Redis: replay -> aggregator -> feed -> server.

One 1/1000 day is replayed for the whole module, watched by a websocket client from before
its start; the tests check what the client got, the server's final state and Redis.
"""

import json
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from websockets.sync.client import connect

from simulator.profile import load
from tests.conftest import UNIT, Server, Ticker, serving
from ticker.core import timeline
from ticker.keys import Keys

SCALED_GMV_FEN = 21_350_000_000  # RMB 213.5bn x 0.001
SCALED_ORDERS = 1_042_000


def state(server: Server) -> dict:
    with urllib.request.urlopen(server.url + "api/state", timeout=5) as resp:
        return json.load(resp)


@dataclass
class Day:
    """A miniature day replayed at max speed to its end, and what was seen of it."""

    ticker: Ticker
    server: Server
    received: list[dict[str, Any]]  # by a websocket client connected before the day began
    final: dict[str, Any]  # /api/state once the day was applied to its end


@pytest.fixture(scope="module")
def watched_day(redis_url: str) -> Iterator[Day]:
    ticker = Ticker(redis_url, f"t{uuid.uuid4().hex[:10]}")
    try:
        with serving(ticker) as server:
            received: list[dict[str, Any]] = []
            with connect(server.ws_url) as ws, ThreadPoolExecutor(1) as pool:
                received += [json.loads(ws.recv(20 * UNIT)) for _ in range(2)]
                run = pool.submit(ticker.miniature_day)
                while True:
                    msg = json.loads(ws.recv(30 * UNIT))
                    received.append(msg)
                    if msg["type"] == "tick" and msg["state"]["ended"]:
                        break
                run.result()
            yield Day(ticker, server, received, state(server))
    finally:
        ticker.close()


def test_miniature_day_is_exact_with_every_milestone_once_in_order(watched_day: Day) -> None:
    """A 1/1000 day at max speed ends on the scaled totals, every milestone fired once."""
    s = watched_day.final
    assert s["ended"]
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


def test_websocket_snapshot_then_rising_ticks_ending_at_api_state(watched_day: Day) -> None:
    """A websocket client gets a snapshot, then ticks that never fall; the last is /api/state."""
    hello, snap, *received = watched_day.received
    assert hello["type"] == "hello" and hello["protocol"] == 1
    assert snap["type"] == "snapshot" and "position" in snap
    ticks = [m for m in received if m["type"] == "tick"]
    assert len(ticks) >= 3
    gmv = [t["state"]["gmv_fen"] for t in ticks]
    orders = [t["state"]["orders"] for t in ticks]
    assert gmv == sorted(gmv) and orders == sorted(orders)
    positions = [t["position"] for t in ticks]
    assert len(set(positions)) == len(positions)
    final = watched_day.final
    assert ticks[-1]["state"]["gmv_fen"] == final["gmv_fen"] == SCALED_GMV_FEN
    assert ticks[-1]["state"]["orders"] == final["orders"] == SCALED_ORDERS
    assert ticks[-1]["position"] == final["position"]
    milestones = [m["milestone"]["id"] for m in received if m["type"] == "milestone"]
    assert milestones == [m["id"] for m in final["milestones"]]


def test_the_day_s_curve_is_stored_whole_and_the_feed_carries_its_tail(watched_day: Day) -> None:
    """After a day: the curve key holds every minute exactly; the last feed entry its tail."""
    keys = Keys(watched_day.ticker.namespace)
    with redis.Redis.from_url(watched_day.ticker.redis_url) as r:
        curve = orjson.loads(r.get(keys.curve) or b"[]")
        last = orjson.loads(r.xrevrange(keys.feed, count=1)[0][1][b"u"])
    assert [p[0] for p in curve] == list(range(0, 86_400_001, 60_000))
    assert curve[-1] == [86_400_000, SCALED_GMV_FEN, SCALED_ORDERS]
    assert last["curve"] == timeline.tail(curve, 0)
    assert len(last["sample_orders"]) == 8
