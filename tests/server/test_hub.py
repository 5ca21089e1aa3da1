"""The hub's feed rules in-process, on a feed kept in a list (`MemoryFeed`): loading, curve
folding, bad entries, milestones, resumes, outages and epochs, each in milliseconds."""

import asyncio
from typing import Any

import orjson
import pytest

from tests.server.conftest import eventually
from ticker import feed
from ticker.core import timeline
from ticker.server import hub as hub_module
from ticker.server.connection import Client
from ticker.server.hub import Hub
from ticker.server.source import MemoryFeed
from ticker.server.ticks import TickVersion
from ticker.server.tuning import Tuning

MIN = 60_000


def entry(fired: list[str] | None = None, **state: Any) -> dict[bytes, bytes]:
    """A feed entry as the aggregator writes it; `fired` names its milestones."""
    u = {**feed.EMPTY_STATE, "run": "r1", **state, "fired": [{"id": f} for f in fired or []]}
    return {b"u": orjson.dumps(u)}


class Peer:
    """The websocket, writer and transport of a client that is never written to directly."""

    closed = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, frame: bytes) -> None:
        self.written.append(frame)

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


def client(hub: Hub) -> Client:
    """A connected client not yet greeted: everything for it waits in its outbox."""
    peer = Peer()
    c = Client(peer, peer, peer, hub.metrics, hub.tuning)  # type: ignore[arg-type]
    hub.clients.add(c)
    return c


def received(c: Client) -> list[tuple[str, str]]:
    """(type, position) of each message waiting for `c`, in the order it would get them."""
    c.outbox.live = True
    out = []
    while isinstance(step := c.outbox.next_message(0.0), bytes | TickVersion):
        msg = orjson.loads(c.resolve(step))
        out.append((msg["type"], msg.get("position")))
    return out


async def loaded(source: MemoryFeed) -> Hub:
    hub = Hub(source, tuning=Tuning(send_threads=1))
    await hub.load()
    return hub


async def test_the_hub_starts_from_the_newest_entry_and_the_whole_curve() -> None:
    """The curve key joined with the newest entry's tail; the state and position of it."""
    curve = [[0, 0, 0], [MIN, 10, 1], [MIN + 500, 15, 2]]
    source = MemoryFeed(curve_=orjson.dumps(curve[:2]))
    source.append(entry(gmv_fen=1))
    source.append(entry(gmv_fen=15, curve=timeline.tail(curve, 0)))
    hub = await loaded(source)
    assert (hub.position, hub.state["gmv_fen"], hub.state["curve"]) == ("2-0", 15, curve)


async def test_a_tail_that_does_not_join_reads_the_curve_key_again() -> None:
    """A tail from after a gap: the whole curve comes from the curve key."""
    hub = await loaded(MemoryFeed(curve_=orjson.dumps([[0, 0, 0]])))
    whole = [[0, 0, 0], [MIN, 1, 1], [2 * MIN, 2, 2], [2 * MIN + 1, 3, 3]]
    hub.source.curve_ = orjson.dumps(whole)  # type: ignore[attr-defined]
    await hub.on_entry("1-0", entry(curve=timeline.tail(whole, 0)))
    assert hub.state["curve"] == whole


async def test_a_bad_entry_is_skipped_counted_and_passed() -> None:
    """Garbage in the feed: counted, the position moves past it, the state stays."""
    hub = await loaded(MemoryFeed())
    await hub.on_entry("1-0", entry(gmv_fen=7))
    await hub.on_entry("2-0", {b"u": b"{not json"})
    assert (hub.metrics.feed_bad_entries, hub.position, hub.state["gmv_fen"]) == (1, "2-0", 7)


async def test_milestones_of_one_entry_reach_a_client_at_their_own_positions() -> None:
    """Two fired in entry 5-0: messages at 5-0.0 and 5-0, before the tick of 5-0."""
    hub = await loaded(MemoryFeed())
    c = client(hub)
    await hub.on_entry("5-0", entry(["a", "b"]))
    hub.broadcast_tick(0.0)
    assert received(c) == [("milestone", "5-0.0"), ("milestone", "5-0"), ("tick", "5-0")]


async def test_ticks_coalesce_for_a_client_that_is_not_ready() -> None:
    """Three entries and ticks while a client is busy: it gets the newest tick alone."""
    hub = await loaded(MemoryFeed())
    c = client(hub)
    for k in (1, 2, 3):
        await hub.on_entry(f"{k}-0", entry(gmv_fen=k))
        hub.broadcast_tick(0.0)
    assert received(c) == [("tick", "3-0")] and hub.metrics.ticks_coalesced == 2


async def test_a_clients_max_rate_holds_its_ticks_direct_or_queued() -> None:
    """max_rate 2, an entry and a tick every 10 ms for 10 s (an injected clock): at most
    2 x 10 + 2 ticks reach the client, written directly or by its sender."""
    hub = await loaded(MemoryFeed())
    c = client(hub)
    c.subscribe(feed.Subscription(max_rate=2))
    c.outbox.live = True
    sent = 0
    for k in range(1, 1_001):
        await hub.on_entry(f"{k}-0", entry(gmv_fen=k))
        hub.broadcast_tick(k / 100)
        while isinstance(c.outbox.next_message(k / 100), bytes | TickVersion):
            sent += 1
    direct = len(c.transport.written)  # type: ignore[attr-defined]
    assert direct and 18 <= direct + sent <= 2 * 10 + 2


def resumable() -> MemoryFeed:
    """Entries 1-0 .. 4-0; 3-0 fires two milestones, 4-0 one."""
    source = MemoryFeed()
    for fired in ([], [], ["m3a", "m3b"], ["m4"]):
        source.append(entry(fired))
    return source


async def missed(hub: Hub, since: str) -> list[str] | None:
    texts = await hub.missed_milestones(since, hub.position)
    return None if texts is None else [orjson.loads(t)["position"] for t in texts]


async def test_a_resume_gets_exactly_the_milestones_after_its_position() -> None:
    """From 2-0: all of 3-0 and 4-0; from 3-0.0 (cut off mid-entry): the rest only."""
    hub = await loaded(resumable())
    assert await missed(hub, "2-0") == ["3-0.0", "3-0", "4-0"]
    assert await missed(hub, "3-0.0") == ["3-0", "4-0"]
    assert await missed(hub, "4-0") == []


async def test_a_resume_from_a_trimmed_position_gets_none() -> None:
    """The entry the client last saw is gone: no list (it gets a fresh snapshot)."""
    source = resumable()
    hub = await loaded(source)
    source.trim(2)
    assert await missed(hub, "2-0") is None


async def test_a_resume_too_far_behind_gets_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """More entries to read than RESUME_MAX_ENTRIES: no list, whatever they hold."""
    monkeypatch.setattr(hub_module, "RESUME_MAX_ENTRIES", 2)
    monkeypatch.setattr(hub_module, "RESUME_PAGE", 1)
    hub = await loaded(resumable())
    assert await missed(hub, "1-0") is None
    assert await missed(hub, "3-0") == ["4-0"]


async def test_after_an_outage_that_trimmed_entries_their_milestones_are_announced() -> None:
    """Back from an outage with the feed trimmed past our position: the newest state, and
    the milestones its state lists that ours did not."""
    source = MemoryFeed()
    source.append(entry(milestones=[{"id": "old"}]))
    hub = await loaded(source)
    c = client(hub)
    source.append(entry(milestones=[{"id": "old"}, {"id": "new1"}]))
    source.append(entry(milestones=[{"id": "old"}, {"id": "new1"}, {"id": "new2"}]))
    source.trim(1)
    await hub.reconnect()
    assert hub.position == "3-0"
    assert received(c) == [("milestone", "3-0.0"), ("milestone", "3-0")]


async def test_a_new_epoch_reloads_the_state() -> None:
    """The feed was lost and begun again: the hub loads the new one."""
    source = resumable()
    hub = await loaded(source)
    source.epoch_, source.entries = "e2", []
    source.append(entry(gmv_fen=9))
    assert await hub.check_epoch()
    assert (hub.epoch, hub.position, hub.state["gmv_fen"]) == ("e2", "1-0", 9)


async def test_the_reader_follows_the_feed_as_it_grows() -> None:
    """The feed reader takes each entry appended, in order."""
    source = MemoryFeed()
    hub = Hub(source, tuning=Tuning(send_threads=1))
    reader = asyncio.create_task(hub.tail())
    try:
        await eventually(lambda: source.reads)
        for k in range(1, 4):
            source.append(entry(gmv_fen=k))
        await eventually(lambda: hub.position == "3-0")
        assert hub.state["gmv_fen"] == 3 and hub.redis_ok
    finally:
        reader.cancel()


async def test_the_memory_feed_pages_as_xrange_does() -> None:
    """Inclusive and exclusive bounds, the ends, and the count."""
    source = resumable()
    assert [p for p, _ in await source.page("(1-0", "+", 2)] == ["2-0", "3-0"]
    assert [p for p, _ in await source.page("-", "2-0", 10)] == ["1-0", "2-0"]


async def test_replay_news_reaches_the_replay_topic_once_and_after_the_waiting_tick() -> None:
    """A state change is pushed once (a heartbeat alone is no news), behind the tick
    waiting for the client, and not to a client without the replay topic."""
    hub = await loaded(MemoryFeed())
    c, totals = client(hub), client(hub)
    totals.subscribe(feed.Subscription(topics=frozenset({"totals"})))
    await hub.on_entry("1-0", entry(gmv_fen=1))
    hub.broadcast_tick(0.0)
    hub.update_replay({"run": "r1", "state": "paused", "heartbeat_ms": 1})
    hub.update_replay({"run": "r1", "state": "paused", "heartbeat_ms": 2})
    assert received(c) == [("tick", "1-0"), ("replay", None)]
    assert received(totals) == [("tick", "1-0")]
