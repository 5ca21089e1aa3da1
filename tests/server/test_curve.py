"""The day's curve: whole in snapshots and /api/state, a tail in ticks (issue 13, item 1).

The aggregator's side is faked: each test writes the curve key and feed entries whose
`curve` is the tail, as the commit script does."""

import orjson
import websockets

from tests.server.conftest import Live, eventually, recv, recv_type, running
from ticker.core import timeline

MIN = 60_000


def day(minutes: int, from_ms: int = 0) -> list[list[int]]:
    """A curve with a point per minute from `from_ms`, and a latest one 30 s later."""
    points = [[from_ms + m * MIN, m * 1000, m * 10] for m in range(minutes + 1)]
    last = points[-1]
    return [*points, [last[0] + 30_000, last[1] + 500, last[2] + 5]]


async def commit(live: Live, curve: list[list[int]], from_ms: int = 0) -> str:
    """What the aggregator's commit writes: the curve key, and an entry with its tail."""
    await live.redis.set(live.keys.curve, orjson.dumps(curve))
    tail = timeline.tail(curve, from_ms)
    return await live.write(curve=tail, from_ms=from_ms, gmv_fen=curve[-1][1])


async def test_snapshot_and_api_state_carry_the_whole_curve(live: Live) -> None:
    """A late viewer gets the day from the window's start, not only the tail."""
    curve = day(100)
    await commit(live, curve)
    await eventually(lambda: live.hub.state["gmv_fen"] == curve[-1][1])
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws)
        assert (await recv(ws))["state"]["curve"] == curve
    assert (await live.get("api/state"))[1]["curve"] == curve


async def test_a_restarted_server_loads_the_curve_with_the_last_entry(
    redis_url: str, namespace: str, live: Live
) -> None:
    """On start the curve key and the newest entry are read together."""
    curve = day(50)
    await commit(live, curve)
    async with running(redis_url, live.keys) as fresh:
        assert (await fresh.get("api/state"))[1]["curve"] == curve


async def test_ticks_carry_the_tail_and_the_server_folds_it_in(live: Live) -> None:
    """A tick has only the entry's tail; /api/state then has the whole curve, extended."""
    await commit(live, day(100))
    # held before connecting: otherwise the commit's own tick can come after the snapshot
    await eventually(lambda: live.hub.state["gmv_fen"] == day(100)[-1][1])
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await live.write(curve=timeline.tail(day(101), 0), gmv_fen=1)  # the key is not read
        tick = await recv_type(ws, "tick")
    assert tick["state"]["curve"] == timeline.tail(day(101), 0)
    assert (await live.get("api/state"))[1]["curve"] == day(101)


async def test_a_tail_that_does_not_join_makes_the_server_read_the_curve_again(
    live: Live,
) -> None:
    """Minutes missing between the held curve and a tail: the whole curve is reread."""
    await commit(live, day(10))
    await eventually(lambda: len(live.hub.curve) == 12)
    await commit(live, day(100))  # a tail starting at minute 68: does not join minute 10
    await eventually(lambda: live.hub.state["gmv_fen"] == day(100)[-1][1])
    assert live.hub.curve == day(100)


async def test_a_new_run_reads_the_curve_again(live: Live) -> None:
    """A seek (a new run) starts from the key's curve, not the old run's points."""
    await commit(live, day(100))
    seek = day(5, from_ms=720 * MIN)
    await live.redis.set(live.keys.curve, orjson.dumps(seek))
    await live.write(run="r1~43200", curve=timeline.tail(seek, 720 * MIN), from_ms=720 * MIN)
    await eventually(lambda: live.hub.state["run"] == "r1~43200")
    assert live.hub.curve == seek
