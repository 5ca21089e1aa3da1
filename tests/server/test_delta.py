"""Delta ticks end to end: a real server on a real port, real clients (websocket, curl's SSE,
FeedClient); the state a delta client rebuilds equals a full subscriber's at every position."""

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets

from tests.core.test_delta import replay_states
from tests.server.conftest import Live, eventually, recv
from tests.server.test_asyncapi import payload_validator
from tests.server.test_replay_state import beat, status
from tests.server.test_sse import curl, sse_url
from ticker.client import FeedClient, Tick
from ticker.core import delta

MILESTONE = {"id": "gmv_1bn", "label": "RMB 1bn", "metric": "gmv_fen", "threshold": 1}
MILESTONE |= {"documented": None, "sim_time_ms": 1, "sim_time": "00:00:00.001"}


class Rebuilt:
    """A client's ticks and deltas folded into states: position -> state, and the counts."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.kinds: Counter[str] = Counter()
        self.state: dict[str, Any] | None = None
        self.last = ""

    def take(self, msg: dict[str, Any]) -> None:
        self.kinds[msg["type"]] += 1
        if msg["type"] == "tick":
            self.state = msg["state"]
        elif msg["type"] == "delta":
            assert self.state is not None, "a delta before any tick"
            self.state = delta.apply(self.state, msg["patch"])
        else:
            return
        self.states[msg["position"]] = self.state
        self.last = msg["position"]


async def replaying(live: Live, count: int = 60) -> str:
    """Write `count` states of a real replay to the feed, ~50 a second, with milestones
    and replay messages among them; the last position."""
    position = ""
    for i, state in enumerate(replay_states()[:count]):
        if i % 15 == 7:
            await beat(live, status("paused" if i % 2 else "running", sim_time_ms=i))
        fired = [{**MILESTONE, "id": f"m{i}"}] if i % 20 == 3 else []
        position = await live.write(fired, **{k: v for k, v in state.items() if k != "replay"})
        await asyncio.sleep(0.02)
    return position


async def read_ws(ws: Any, into: Rebuilt, done: Callable[[], bool]) -> None:
    while not done():
        into.take(await recv(ws))


@contextlib.asynccontextmanager
async def subscribed(live: Live, **request: Any) -> AsyncIterator[Any]:
    async with websockets.connect(live.ws_url, max_size=2**24) as ws:
        await recv(ws), await recv(ws)  # hello, snapshot
        await ws.send(json.dumps({"type": "subscribe", **request}))
        await eventually(lambda: len(live.hub.clients) and all(c.ready for c in live.hub.clients))
        yield ws


def assert_same(full: Rebuilt, rebuilt: Rebuilt, at_least: int = 1) -> None:
    """Equal states wherever both got the same position, and at the end."""
    common = full.states.keys() & rebuilt.states.keys()
    assert len(common) >= at_least and full.last == rebuilt.last
    for position in common:
        assert rebuilt.states[position] == full.states[position], position


async def test_a_delta_client_rebuilds_the_full_ticks_exactly(live: Live) -> None:
    """Websocket, every topic: deltas applied in order give the full subscriber's states."""
    full, rebuilt = Rebuilt(), Rebuilt()
    async with subscribed(live) as a, subscribed(live, delta=True) as b:
        last = await replaying(live)
        done = lambda: full.last == last and rebuilt.last == last  # noqa: E731
        await asyncio.wait_for(
            asyncio.gather(read_ws(a, full, done), read_ws(b, rebuilt, done)), 30
        )
    assert rebuilt.kinds["delta"] > 10 and full.kinds["delta"] == 0
    assert_same(full, rebuilt, at_least=10)


async def test_a_rate_limited_delta_client_gets_patches_against_what_it_last_received(
    live: Live,
) -> None:
    """max_rate 2 (its ticks coalesce, positions skipped) beside clients in step: exact."""
    full, slow, fast = Rebuilt(), Rebuilt(), Rebuilt()
    async with (
        subscribed(live) as a,
        subscribed(live, delta=True, max_rate=2) as b,
        subscribed(live, delta=True) as c,
    ):
        last = await replaying(live)
        done = lambda: all(r.last == last for r in (full, slow, fast))  # noqa: E731
        await asyncio.wait_for(
            asyncio.gather(read_ws(a, full, done), read_ws(b, slow, done), read_ws(c, fast, done)),
            30,
        )
    assert slow.kinds["delta"] >= 1 and len(slow.states) < len(fast.states)
    assert_same(full, slow)
    assert_same(full, fast, at_least=10)


async def test_a_subscription_change_brings_a_full_tick_of_the_new_topics(live: Live) -> None:
    """After a new subscribe: a full tick of the new topics, then deltas again."""
    async with subscribed(live, delta=True) as ws:
        await live.write(gmv_fen=1)
        p2 = await live.write(gmv_fen=2)
        while (await recv(ws)).get("position") != p2:
            pass  # nothing is left pending for it
        await ws.send(json.dumps({"type": "subscribe", "topics": ["totals"], "delta": True}))
        await eventually(lambda: all(c.sub.topics == {"totals"} for c in live.hub.clients))
        p3 = await live.write(gmv_fen=3)
        msg = await recv(ws)
        assert msg["position"] == p3 and msg["type"] == "tick" and "top_brands" not in msg["state"]
        await live.write(gmv_fen=4)
        msg = await recv(ws)
    assert msg["type"] == "delta" and msg["patch"] == {"gmv_fen": 4}


async def test_real_delta_messages_fit_the_schema(live: Live) -> None:
    """The delta messages a real replay brings validate against feed.schema.json."""
    rebuilt, seen = Rebuilt(), []
    async with subscribed(live, delta=True) as ws:
        last = await replaying(live, count=30)
        while rebuilt.last != last:
            seen.append(msg := await recv(ws))
            rebuilt.take(msg)
    deltas = [m for m in seen if m["type"] == "delta"]
    assert deltas
    for msg in deltas:
        payload_validator("delta").validate(msg)


async def test_an_sse_delta_stream_rebuilds_the_full_ticks_exactly(live: Live) -> None:
    """/sse?delta=1: `delta` events with ids, applied in order, equal the websocket's ticks."""
    full, rebuilt = Rebuilt(), Rebuilt()
    async with subscribed(live) as a, curl(sse_url(live, "delta=1")) as c:
        await c.until("snapshot")
        last = await replaying(live)
        done = lambda: full.last == last and rebuilt.last == last  # noqa: E731

        async def read_sse() -> None:
            while not done():
                event = await c.next()
                if event["event"] == "delta":
                    assert event["id"].endswith("/" + event["data"]["position"])
                rebuilt.take(event["data"])

        await asyncio.wait_for(asyncio.gather(read_ws(a, full, done), read_sse()), 30)
    assert rebuilt.kinds["delta"] > 10
    assert_same(full, rebuilt, at_least=10)


async def test_feed_client_with_deltas_hands_out_the_full_states_across_a_resume(
    live: Live,
) -> None:
    """FeedClient(delta=True), cut off mid-replay: it resumes and its ticks stay exact."""
    full, rebuilt = Rebuilt(), Rebuilt()

    async def follow(client: FeedClient, into: Rebuilt) -> None:
        async for msg in client:
            if isinstance(msg, Tick):
                into.take({"type": "tick", "position": msg.position, "state": msg.state})

    tasks = [
        asyncio.create_task(follow(FeedClient(live.ws_url, delta=d), r))
        for d, r in ((False, full), (True, rebuilt))
    ]
    await eventually(lambda: len(live.hub.clients) == 2)
    first = asyncio.create_task(replaying(live, count=30))
    await eventually(lambda: len(rebuilt.states) >= 5)
    (cut,) = [c for c in live.hub.clients if c.sub.delta]
    cut.transport.abort()  # the delta client's connection drops
    await eventually(
        lambda: cut not in live.hub.clients and any(c.sub.delta for c in live.hub.clients)
    )
    await first
    last = await replaying(live, count=30)
    await eventually(lambda: full.last == last and rebuilt.last == last, timeout=30)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert_same(full, rebuilt, at_least=10)


async def test_a_delta_flag_that_is_not_a_boolean_is_a_bad_request(live: Live) -> None:
    """`"delta": "yes"` on the websocket: an error; `?delta=2` on /sse: HTTP 400."""
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await ws.send(json.dumps({"type": "subscribe", "delta": "yes"}))
        assert (await recv(ws))["code"] == "bad_request"
    status, body = await live.get("sse?delta=2")
    assert (status, body["error"]) == (400, "bad_request")
