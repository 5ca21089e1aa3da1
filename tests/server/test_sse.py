"""`GET /sse` with a real server and `curl -N` as the client."""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import UNIT
from tests.server.conftest import Live, eventually, running
from ticker.guard import Policy
from ticker.keys import Keys
from ticker.server import Tuning
from ticker.server.sse import event, parse_resume


class Curl:
    """`curl -N` reading an event stream; its events parsed as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.comments: list[str] = []
        self.retry: int | None = None

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next event: `event`, `id` (if any) and `data` (the JSON, parsed)."""
        fields: dict[str, Any] = {}
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout * UNIT)
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if line == "":
                if "data" in fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments.append(value)
            elif name == "retry":
                self.retry = int(value)
            elif name == "data":
                fields["data"] = json.loads(value)
            else:
                fields[name] = value

    async def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout * UNIT
        while (e := await self.next(max(0.01, deadline - time.monotonic()) / UNIT))[
            "event"
        ] != kind:
            pass
        return e

    async def comment(self, timeout: float = 10) -> str:
        """The next comment line's text (events before it are skipped)."""
        assert self.proc.stdout is not None
        raw = b""
        while not raw.startswith(b":"):
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout * UNIT)
            assert raw, "the stream ended"
        return raw.decode()[1:].strip()

    async def ended(self, timeout: float = 10) -> bool:
        assert self.proc.stdout is not None
        while await asyncio.wait_for(self.proc.stdout.readline(), timeout * UNIT):
            pass
        return True


@contextlib.asynccontextmanager
async def curl(url: str, *headers: str) -> AsyncIterator[Curl]:
    args = [a for h in headers for a in ("-H", h)]
    proc = await asyncio.create_subprocess_exec(
        "curl", "-N", "-s", *args, url, stdout=asyncio.subprocess.PIPE
    )
    try:
        yield Curl(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        # Bounded: a run of the whole folder under load once hung past 5 minutes in this
        # test module's teardown; a bound makes that a failure that says where.
        await asyncio.wait_for(proc.wait(), 30 * UNIT)


def sse_url(live: Live, query: str = "") -> str:
    return live.url + "sse" + (f"?{query}" if query else "")


async def test_curl_gets_hello_a_snapshot_and_ticks(live: Live) -> None:
    """hello, then the snapshot at the newest position, then a tick per new entry."""
    first = await live.write(gmv_fen=100)
    await eventually(lambda: live.hub.position == first)
    async with curl(sse_url(live)) as c:
        hello = await c.next()
        snap = await c.next()
        assert (hello["event"], "id" in hello, c.retry) == ("hello", False, 1000)
        assert (snap["event"], snap["id"], snap["data"]["state"]["gmv_fen"]) == (
            "snapshot",
            f"/{first}",
            100,
        )
        second = await live.write(gmv_fen=250)
        tick = await c.until("tick")
        assert (tick["id"], tick["data"]["state"]["gmv_fen"]) == (f"/{second}", 250)


async def test_last_event_id_resumes_with_the_milestones_missed(live: Live) -> None:
    """Reconnecting with the last id gets the milestones fired since, then a snapshot."""
    await live.redis.set(live.keys.epoch, "E1")
    first = await live.write(gmv_fen=1)
    await eventually(lambda: (live.hub.position, live.hub.epoch) == (first, "E1"))
    async with curl(sse_url(live)) as c:
        last_id = (await c.until("snapshot"))["id"]
    assert last_id == f"E1/{first}"
    await live.write([{"id": "m1"}, {"id": "m2"}], gmv_fen=2)
    newest = await live.write([{"id": "m3"}], gmv_fen=3)
    await eventually(lambda: live.hub.position == newest)
    async with curl(sse_url(live), f"Last-Event-ID: {last_id}") as c:
        await c.until("hello")
        got = [await c.next() for _ in range(4)]
    assert [e["data"].get("milestone", {}).get("id") for e in got[:3]] == ["m1", "m2", "m3"]
    assert (got[3]["event"], got[3]["data"]["recovered"], got[3]["id"]) == (
        "snapshot",
        True,
        f"E1/{newest}",
    )


async def test_since_and_epoch_in_the_query_resume_as_on_the_websocket(live: Live) -> None:
    """`?since=&epoch=` of another epoch gets a fresh snapshot (recovered false)."""
    pos = await live.write(gmv_fen=5)
    await eventually(lambda: live.hub.position == pos)
    async with curl(sse_url(live, f"since={pos}&epoch=other")) as c:
        snap = await c.until("snapshot")
    assert snap["data"]["recovered"] is False


@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("topics=totals,nope", None),
        ("max_rate=fast", None),
        ("max_rate=0", None),
        ("max_rate=nan", None),
        ("since=1-x", None),
        ("", "Last-Event-ID: E1/not-a-position"),
    ],
)
async def test_a_bad_query_or_last_event_id_is_a_clear_400(
    live: Live, query: str, header: str | None
) -> None:
    """Bad subscriptions, rates and resume ids are refused before the stream starts."""
    headers = dict([header.split(": ")]) if header else {}
    status, body = await live.get("sse" + (f"?{query}" if query else ""), headers=headers)
    assert (status, body["error"]) == (400, "bad_request")
    assert body["message"]


async def test_topics_select_the_tick_fields(live: Live) -> None:
    """`?topics=totals` ticks carry no top lists; the snapshot stays full."""
    async with curl(sse_url(live, "topics=totals&max_rate=2")) as c:
        snap = await c.until("snapshot")
        await live.write(gmv_fen=7)
        tick = await c.until("tick")
    assert "top_brands" in snap["data"]["state"]
    assert "top_brands" not in tick["data"]["state"]


async def test_a_quiet_stream_gets_ping_comments(redis_url: str, namespace: str) -> None:
    """After `heartbeat` seconds without an event the server writes `: ping`."""
    tuning = Tuning(send_threads=1, heartbeat=0.2)
    async with (
        running(redis_url, Keys(namespace), tuning=tuning) as live,
        curl(sse_url(live)) as c,
    ):
        await c.until("snapshot")
        assert await c.comment() == "ping"


async def test_the_token_and_origin_rules_of_ws_hold(redis_url: str, namespace: str) -> None:
    """No token: 401; a foreign Origin: 403; the token as ?token= or Bearer: a stream."""
    async with running(redis_url, Keys(namespace), Policy(feed_token="T")) as live:
        assert (await live.get("sse"))[0] == 401
        status, _ = await live.get("sse?token=T", headers={"Origin": "https://evil.example"})
        assert status == 403
        async with curl(sse_url(live, "token=T")) as c:
            assert (await c.next())["event"] == "hello"
        async with curl(sse_url(live), "Authorization: Bearer T") as c:
            assert (await c.next())["event"] == "hello"


async def test_the_client_cap_counts_sse_clients(redis_url: str, namespace: str) -> None:
    """With max_clients 1 and one SSE client connected, the next gets 503 full."""
    async with (
        running(redis_url, Keys(namespace), Policy(max_clients=1)) as live,
        curl(sse_url(live)) as c,
    ):
        await c.until("snapshot")
        status, body = await live.get("sse")
    assert (status, body["error"]) == (503, "full")


async def test_metrics_count_clients_by_transport(live: Live) -> None:
    """An SSE client shows as transport="sse"; it is gone from the count once it leaves."""
    async with curl(sse_url(live)) as c:
        await c.until("snapshot")
        async with live.http.get(live.url + "metrics") as resp:
            text = await resp.text()
    assert 'ticker_clients_by_transport{transport="sse"} 1' in text
    assert 'ticker_clients_by_transport{transport="ws"} 0' in text
    await eventually(lambda: not live.hub.clients)


async def test_shutdown_ends_the_stream_cleanly(redis_url: str, namespace: str) -> None:
    """On shutdown the stream ends (curl exits 0) and counts as a shutdown."""
    async with running(redis_url, Keys(namespace)) as live:
        async with curl(sse_url(live)) as c:
            await c.until("snapshot")
            await live.app.shutdown()
            assert await c.ended()
            assert await asyncio.wait_for(c.proc.wait(), 10 * UNIT) == 0
        assert live.hub.metrics.disconnects["shutdown"] == 1


def test_an_event_carries_its_type_epoch_and_position() -> None:
    """Positioned messages get `id: <epoch>/<position>`; the others no id."""
    tick = b'{"type":"tick","position":"5-0","state":{}}'
    assert event(tick, "E") == b"event: tick\nid: E/5-0\ndata: " + tick + b"\n\n"
    assert event(b'{"type":"replay","replay":null}', "E").startswith(b"event: replay\ndata: ")


def test_last_event_id_wins_over_the_query() -> None:
    """`E/5-0.1` resumes at 5-0.1 of epoch E; a bare position keeps ?epoch=."""
    assert parse_resume("E/5-0.1", "1-0", "X") == ("5-0.1", "E")
    assert parse_resume("7-0", None, "X") == ("7-0", "X")
    assert parse_resume(None, "1-0", "X") == ("1-0", "X")


def stuck_sse_client(port: int) -> socket.socket:
    """A TCP socket that asks for /sse with a tiny receive window and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


async def test_an_sse_client_that_stops_reading_gets_coalesced_ticks_then_is_dropped(
    redis_url: str, namespace: str
) -> None:
    """Its ticks coalesce (never an unbounded queue); after the send timeout it is cut."""
    tuning = Tuning(send_threads=1, send_timeout=0.5, send_buffer=4096, socket_buffer=4096)
    async with running(redis_url, Keys(namespace), tuning=tuning) as live:
        port = int(live.url.rsplit(":", 1)[1].strip("/"))
        sock = stuck_sse_client(port)
        try:
            await eventually(lambda: live.hub.clients)
            for n in range(500):  # far more than the socket buffers and the transport hold
                if live.hub.metrics.disconnects["slow"]:
                    break
                await live.write(gmv_fen=n, title="x" * 20_000)
                await eventually(lambda n=n: live.hub.state["gmv_fen"] == n)
            assert live.hub.metrics.ticks_coalesced > 0
            assert not live.hub.clients
        finally:
            sock.close()


async def test_an_allowed_origin_may_read_the_stream_cross_origin(
    redis_url: str, namespace: str
) -> None:
    """A page on an --allow-origin origin gets Access-Control-Allow-Origin for itself."""
    policy = Policy(allowed_origins=frozenset({"https://shop.example"}))
    async with (
        running(redis_url, Keys(namespace), policy) as live,
        live.http.get(live.url + "sse", headers={"Origin": "https://shop.example"}) as resp,
    ):
        assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert resp.headers["Content-Type"].startswith("text/event-stream")


async def test_a_feed_reset_ends_the_stream_so_the_client_resyncs(live: Live) -> None:
    """A new epoch ends every SSE stream (as 1012 closes a websocket)."""
    await live.redis.set(live.keys.epoch, "E1")
    await eventually(lambda: live.hub.epoch == "E1")
    async with curl(sse_url(live)) as c:
        await c.until("snapshot")
        await live.redis.set(live.keys.epoch, "E2")
        assert await c.ended()
    assert live.hub.metrics.disconnects["resync"] == 1
