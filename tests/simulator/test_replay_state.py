"""The replay's heartbeat in `Keys.replay` and its handling of control entries, against a
real Redis: what screens and `ticker control` rely on."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

import orjson
import pytest

from simulator import profile
from simulator.generator import DayPlan
from simulator.replay import LostWrites, Replay
from tests.conftest import UNIT
from ticker.core.batch import ReplayMeta
from ticker.core.clock import parse_time_of_day
from ticker.keys import Keys
from ticker.redis_io import client

WINDOW = (parse_time_of_day("01:00"), parse_time_of_day("03:00"))


def plan(frm: int = WINDOW[0], to: int = WINDOW[1]) -> DayPlan:
    return DayPlan(profile.load("2018"), Fraction(1, 1000), frm, to, batch_size=50)


async def state_of(redis_url: str, keys: Keys) -> dict[str, Any]:
    r = client(redis_url)
    try:
        raw = await r.hget(keys.replay, "state")
    finally:
        await r.aclose()
    return orjson.loads(raw) if raw else {}


async def until(check: Callable[[], Any], timeout: float = 10) -> None:
    """Wait until the async `check()` is truthy, failing after `timeout` units."""
    deadline = time.monotonic() + timeout * UNIT
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def replaying(
    redis_url: str, namespace: str, speed: float | None = 60.0, **options: Any
) -> AsyncIterator[Replay]:
    replay = Replay(redis_url, Keys(namespace), plan(), "r1", speed, **options)
    task = asyncio.create_task(replay.run())
    try:
        yield replay
    finally:
        # Cancelled until it ends: a cancellation that lands in a Redis command's own
        # timeout can come out as a timeout error (a retry, not a stop), and the replay
        # went on at 1x (a run hung under load). `ticker replay` has a grace timer for this.
        deadline = time.monotonic() + 60 * UNIT
        while not task.done():
            assert time.monotonic() < deadline, "the replay would not stop"
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await replay.redis.aclose()


async def send(redis_url: str, keys: Keys, *entries: dict[bytes, bytes]) -> None:
    r = client(redis_url)
    try:
        for fields in entries:
            await r.xadd(keys.control, fields)  # type: ignore[arg-type]
    finally:
        await r.aclose()


async def test_a_running_replay_beats_with_its_window(redis_url: str, namespace: str) -> None:
    """While it runs, the state carries a fresh heartbeat, the run's window and the first."""
    keys = Keys(namespace)
    async with replaying(redis_url, namespace):
        await until(lambda: state_of(redis_url, keys))
        state = await state_of(redis_url, keys)
        assert state["state"] == "running" and state["waiting"] is None
        assert abs(state["heartbeat_ms"] - time.time() * 1000) < 5_000 * UNIT
        assert (state["from_ms"], state["to_ms"]) == WINDOW
        assert (state["window_from_ms"], state["window_to_ms"]) == WINDOW


async def test_a_replay_waiting_for_an_aggregator_says_so(redis_url: str, namespace: str) -> None:
    """With no aggregator, the state says waiting, keeps beating, and on_waiting is told."""
    keys, told = Keys(namespace), []
    async with replaying(redis_url, namespace, None, max_backlog=20, on_waiting=told.append):

        async def waiting() -> bool:
            state = await state_of(redis_url, keys)
            return state.get("waiting") == "aggregator" and bool(told)

        await until(waiting)
        first = (await state_of(redis_url, keys))["heartbeat_ms"]
        await until(lambda: _beat_after(redis_url, keys, first))
    assert told[0] is not None and told[0] > 20


async def _beat_after(redis_url: str, keys: Keys, beat: int) -> bool:
    return bool((await state_of(redis_url, keys))["heartbeat_ms"] > beat)


BAD_ENTRIES = [
    {b"c": b"not json"},
    {b"c": b"[1, 2]"},
    {b"c": b'{"action": "seek"}'},
    {b"c": b'{"action": "speed", "speed": "fast"}'},
    {b"c": b'{"action": "seek", "to_ms": 1}'},  # before the window
    {b"x": b"y"},
]


async def test_malformed_control_entries_are_skipped_and_pause_still_works(
    redis_url: str, namespace: str
) -> None:
    """Bad control entries never stop the replay: the pause after them is obeyed."""
    keys = Keys(namespace)
    async with replaying(redis_url, namespace) as replay:
        await until(lambda: state_of(redis_url, keys))
        await send(redis_url, keys, *BAD_ENTRIES, {b"c": b'{"action": "pause"}'})
        await until(lambda: _state_is(redis_url, keys, "paused"))
        assert replay.clock.paused
        paused_at = (await state_of(redis_url, keys))["heartbeat_ms"]
        await until(lambda: _beat_after(redis_url, keys, paused_at))  # paused, still beating


async def _state_is(redis_url: str, keys: Keys, name: str) -> bool:
    return bool((await state_of(redis_url, keys)).get("state") == name)


async def test_a_seek_keeps_the_first_window(redis_url: str, namespace: str) -> None:
    """After a seek, from_ms is the seek point and window_from_ms stays the first window's;
    the new run's start entry carries the day before the seek point."""
    keys, to = Keys(namespace), parse_time_of_day("02:30")
    async with replaying(redis_url, namespace):
        await until(lambda: state_of(redis_url, keys))
        await send(redis_url, keys, {b"c": orjson.dumps({"action": "seek", "to_ms": to})})

        async def seeked() -> bool:
            return bool((await state_of(redis_url, keys)).get("from_ms") == to)

        await until(seeked)
        state = await state_of(redis_url, keys)
        assert (state["window_from_ms"], state["window_to_ms"]) == WINDOW
        meta = await start_meta(redis_url, keys, state["run"])
        assert meta.history == plan(to).meta().history and meta.history[-1][0] == to - 60_000


async def start_meta(redis_url: str, keys: Keys, run: str) -> ReplayMeta:
    r = client(redis_url)
    try:
        entries = await r.xrange(keys.orders)
    finally:
        await r.aclose()
    start = next(f for _, f in entries if f[b"run"] == run.encode() and f[b"kind"] == b"start")
    return ReplayMeta.from_json(start[b"meta"])


async def test_the_end_is_written_once_as_ended(redis_url: str, namespace: str) -> None:
    """A replay that wrote its window to the end leaves the state "ended"."""
    keys = Keys(namespace)
    replay = Replay(redis_url, keys, plan(), "r1", None, max_backlog=10**9)
    try:
        await asyncio.wait_for(replay.run(), 60 * UNIT)
    finally:
        await replay.redis.aclose()
    state = await state_of(redis_url, keys)
    assert state["state"] == "ended" and state["sim_time_ms"] == WINDOW[1]


async def test_an_entry_trimmed_behind_another_producer_is_not_lost(
    redis_url: str, namespace: str
) -> None:
    """Only an entry missing within what the stream holds is a lost write, not a trimmed one."""
    keys = Keys(namespace)
    replay = Replay(redis_url, keys, plan(), "r1", None)
    try:
        ours = await replay.redis.xadd(keys.orders, {b"k": b"ours"})
        await replay.redis.xadd(keys.orders, {b"k": b"theirs"})
        await replay.redis.xtrim(keys.orders, maxlen=1, approximate=False)
        await replay._lost_if_missing([(0, ours)], [[]])
        newest = await replay.redis.xadd(keys.orders, {b"k": b"ours again"})
        await replay.redis.xdel(keys.orders, newest)
        with pytest.raises(LostWrites):
            await replay._lost_if_missing([(0, newest)], [[]])
    finally:
        await replay.redis.aclose()


async def test_the_clock_starts_once_the_first_batches_are_made(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first block that is slow to make does not start the window late: the replay's
    clock is anchored after it is made, so its slots are not already overdue."""
    import simulator.replay

    made: list[float] = []

    class SlowFirstBlock(simulator.replay.Ahead):
        def next(self, timeout: float = 0.0) -> Any:
            if len(made) < 20:  # "still being made" for the writer's first 20 looks
                made.append(0.0)
                return None
            block = super().next(timeout)
            made.append(time.monotonic())
            return block

    monkeypatch.setattr(simulator.replay, "Ahead", SlowFirstBlock)
    async with replaying(redis_url, namespace, speed=1.0, workers=0) as replay:
        await until(lambda: asyncio.sleep(0, replay.progress.batches))
    assert replay.clock.anchor_wall >= made[20]
