"""The replay's state reaches every screen within a second; commands nothing can obey are
refused (issue 13, item 2)."""

from typing import Any

import orjson
import websockets

from tests.server.conftest import Live, eventually, now_ms, recv, recv_type, running
from ticker.core.control import STALE_MS
from ticker.guard import Policy
from ticker.keys import Keys


def status(state: str, **fields: Any) -> dict[str, Any]:
    """A replay hash's state as the replay writes it."""
    return {
        "run": "r1",
        "state": state,
        "speed": 60.0,
        "speed_reached": 60.0,
        "behind_ms": 0,
        "sim_time_ms": 3_600_000,
        "from_ms": 0,
        "to_ms": 86_400_000,
        "window_from_ms": 0,
        "window_to_ms": 86_400_000,
        "heartbeat_ms": now_ms(),
        "waiting": None,
        **fields,
    }


async def beat(live: Live, state: dict[str, Any]) -> None:
    await live.redis.hset(live.keys.replay, "state", orjson.dumps(state))


async def test_a_pause_reaches_a_connected_client_as_a_replay_message(live: Live) -> None:
    """A replay hash written as paused reaches a websocket client, with no feed entry."""
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)  # hello, snapshot
        await beat(live, status("paused"))
        msg = await recv_type(ws, "replay", timeout=10)
    assert msg["replay"]["state"] == "paused" and msg["replay"]["run"] == "r1"


async def test_a_replay_that_stops_beating_is_shown_stopped(live: Live) -> None:
    """A heartbeat that stops turns into a `stopped` message within STALE_MS + 1 s."""
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await beat(live, status("running"))
        # (seen as running while its one heartbeat is fresh: within STALE_MS)
        running = await recv_type(ws, "replay", timeout=STALE_MS / 1000)
        assert running["replay"]["state"] == "running"
        msg = await recv_type(ws, "replay", timeout=STALE_MS / 1000 + 1)
    assert msg["replay"]["state"] == "stopped"


async def test_replay_messages_go_only_to_the_replay_topic(live: Live) -> None:
    """A client subscribed to totals alone gets no replay messages."""
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await ws.send('{"type": "subscribe", "topics": ["totals"]}')
        await ws.send("{")  # its error answer: the subscription is in force
        await recv_type(ws, "error")
        await beat(live, status("paused"))
        await eventually(lambda: (live.hub.replay or {}).get("state") == "paused")
        await live.write(gmv_fen=5)
        assert (await recv(ws))["type"] == "tick"


async def test_commands_nothing_can_obey_are_refused_with_409(
    redis_url: str, namespace: str
) -> None:
    """No replay, an ended one, or a seek outside the window: 409 with the reason."""
    auth = {"Authorization": "Bearer C"}
    async with running(redis_url, Keys(namespace), Policy(control_token="C")) as live:
        code, body = await live.post("api/replay", {"action": "pause"}, headers=auth)
        assert (code, body["error"]) == (409, "refused") and "no replay" in body["message"]
        await beat(live, status("ended"))
        code, body = await live.post("api/replay", {"action": "speed", "speed": 2}, headers=auth)
        assert code == 409 and "ended" in body["message"]
        await beat(live, status("running", window_from_ms=43_200_000))
        code, body = await live.post("api/replay", {"action": "seek", "to": "06:00"}, headers=auth)
        assert code == 409 and "outside" in body["message"]
        code, body = await live.post("api/replay", {"action": "seek", "to": "13:00"}, headers=auth)
        assert code == 202, body
