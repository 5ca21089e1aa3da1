"""Hostile and unlucky clients, careless feed writers, Redis faults (issue 14, items 4, 5,
7, 8): each attack as it was reproduced against the server, each a test."""

import asyncio
import base64
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import UNIT
from tests.server.conftest import (
    Live,
    Proxy,
    eventually,
    handshake,
    recv,
    recv_type,
    running,
)
from ticker.guard import Policy, parse_networks
from ticker.keys import Keys
from ticker.server import Tuning
from ticker.server import hub as server_module

MILESTONE = {"id": "gmv_1bn", "label": "RMB 1bn", "metric": "gmv_fen", "threshold": 1}


async def status_of(url: str, **kwargs: Any) -> int:
    """The HTTP status of a websocket handshake (101 when it is accepted)."""
    try:
        async with websockets.connect(url, **kwargs) as ws:
            await recv(ws)
            return 101
    except InvalidStatus as exc:
        return int(exc.response.status_code)


def raw_request(port: int, head: bytes) -> bytes:
    """Send raw request bytes; the whole answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10 * UNIT) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def port_of(live: Live) -> int:
    return int(live.url.rsplit(":", 1)[1].strip("/"))


# -- the feed reader ----------------------------------------------------------------------


async def test_bad_feed_entries_are_skipped_and_logged(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """`XADD feed * x y` and a `u` that is not JSON are skipped; the next entry is taken."""
    await live.redis.xadd(live.keys.feed, {"x": "y"})
    await live.redis.xadd(live.keys.feed, {"u": "{not json"})
    await live.write(gmv_fen=42)
    await eventually(lambda: live.hub.state["gmv_fen"] == 42)
    assert live.hub.metrics.feed_bad_entries == 2
    assert caplog.text.count("skipped feed entry") == 2


async def test_the_feed_reader_restarts_after_an_unexpected_failure(
    live: Live, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure inside the reader is logged, and the reader goes on from where it was."""
    check = live.hub.check_epoch
    failures = iter([RuntimeError("boom")])

    async def flaky() -> bool:
        for exc in failures:
            raise exc
        return await check()

    monkeypatch.setattr(live.hub, "check_epoch", flaky)
    await live.write(gmv_fen=1)
    await live.write(gmv_fen=2)
    await eventually(lambda: live.hub.state["gmv_fen"] == 2)
    assert "the feed reader failed" in caplog.text


@contextlib.asynccontextmanager
async def behind_proxy(redis_url: str, namespace: str) -> AsyncIterator[tuple[Live, Proxy]]:
    proxy = Proxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        async with running(redis_url, Keys(namespace), server_redis_url=url) as live:
            yield live, proxy
    finally:
        await proxy.cut()


async def test_a_milestone_fired_during_a_redis_outage_still_reaches_clients(
    redis_url: str, namespace: str
) -> None:
    """After an outage the reader goes on from its position, not from the newest entry."""
    async with behind_proxy(redis_url, namespace) as (live, proxy):
        async with websockets.connect(live.ws_url) as ws:
            await recv(ws), await recv(ws)
            await proxy.cut()
            await eventually(lambda: live.hub.healthy() is not None)
            assert (await live.get("healthz"))[0] == 503
            await live.write(fired=[MILESTONE], gmv_fen=100)
            await live.write(gmv_fen=101)
            await proxy.start()
            msg = await recv_type(ws, "milestone", timeout=15)
        assert msg["milestone"]["id"] == "gmv_1bn"
        await eventually(lambda: live.hub.state["gmv_fen"] == 101)


async def test_milestones_trimmed_away_during_an_outage_are_sent_from_the_state(
    redis_url: str, namespace: str
) -> None:
    """Entries gone when Redis is back: the milestones the newest state lists are sent."""
    async with behind_proxy(redis_url, namespace) as (live, proxy):
        await live.write(gmv_fen=1)
        await eventually(lambda: live.hub.state["gmv_fen"] == 1)
        async with websockets.connect(live.ws_url) as ws:
            await recv(ws), await recv(ws)
            await proxy.cut()
            await eventually(lambda: not live.hub.redis_ok)
            await live.write(fired=[MILESTONE], gmv_fen=100, milestones=[MILESTONE])
            await live.write(gmv_fen=101, milestones=[MILESTONE])
            await live.redis.xtrim(live.keys.feed, maxlen=1)
            await proxy.start()
            msg = await recv_type(ws, "milestone", timeout=15)
        assert msg["milestone"]["id"] == "gmv_1bn"


async def test_a_new_epoch_reloads_the_feed_and_resyncs_clients(live: Live) -> None:
    """Redis lost its data (a new epoch): clients are closed with 1012, the state reloads."""
    await live.redis.set(live.keys.epoch, "old")
    await live.write(gmv_fen=500)
    await eventually(lambda: live.hub.epoch == "old" and live.hub.state["gmv_fen"] == 500)
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await live.redis.delete(live.keys.feed)
        await live.redis.set(live.keys.epoch, "new")
        await live.write(gmv_fen=7)
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
        assert ws.close_code == 1012
    await eventually(lambda: live.hub.epoch == "new" and live.hub.state["gmv_fen"] == 7)


async def test_healthz_shows_no_figures(live: Live) -> None:
    """/healthz says ok and a status in words; no position, no client count."""
    status, body = await live.get("healthz")
    assert status == 200 and set(body) == {"ok", "status"} and body["ok"] is True
    assert not any(ch.isdigit() for ch in body["status"])


# -- resumes --------------------------------------------------------------------------------


async def test_many_resumes_from_the_oldest_position_read_a_bounded_feed(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 resumes far behind: each reads at most a bound of entries, a few at a time,
    and gets a fresh snapshot (recovered false) instead of the whole feed."""
    monkeypatch.setattr(server_module, "RESUME_MAX_ENTRIES", 256)
    clients = 200
    async with running(redis_url, Keys(namespace), Policy(connects_per_ip_per_s=1e6)) as live:
        async with live.redis.pipeline(transaction=False) as pipe:
            for n in range(1000):
                pipe.xadd(live.keys.feed, {"u": orjson.dumps({"gmv_fen": n, "pad": "x" * 500})})
            oldest = (await pipe.execute())[0].decode()
        await live.write(gmv_fen=1000)
        await eventually(lambda: live.hub.state["gmv_fen"] == 1000)

        async def resume() -> dict[str, Any]:
            async with websockets.connect(f"{live.ws_url}?since={oldest}") as ws:
                await recv(ws, 60)
                return await recv(ws, 60)

        snaps = await asyncio.gather(*(resume() for _ in range(clients)))
        metrics = live.hub.metrics
    assert all(s["type"] == "snapshot" and s["recovered"] is False for s in snaps)
    assert metrics.resume_entries_read <= clients * (256 + server_module.RESUME_PAGE)
    assert metrics.resume_readers_peak <= server_module.RESUME_READERS


@pytest.mark.parametrize(
    "since", ["99999999999999999999-0", "①-0", "1-②", "1" * 49 + "-0", "1-0." + "9" * 30]
)
async def test_a_bad_resume_position_is_a_400_before_the_upgrade(live: Live, since: str) -> None:
    """Positions beyond a stream id, non-ASCII digits or too long: 400, never a 500."""
    assert await status_of(f"{live.ws_url}?since={since}&epoch=e") == 400
    assert live.hub.metrics.connections_refused["bad_request"] == 1


# -- headers, secrets ------------------------------------------------------------------------


async def test_a_bearer_token_of_odd_bytes_is_a_401(redis_url: str, namespace: str) -> None:
    """`Authorization: Bearer \\xff` answers 401 on /api/replay, /api/state and /ws."""
    policy = Policy(feed_token="T", control_token="C")
    async with running(redis_url, Keys(namespace), policy) as live:
        auth = b"Authorization: Bearer \xff\xfe\r\n"
        key = base64.b64encode(os.urandom(16))
        requests = [
            b"POST /api/replay HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + auth,
            b"GET /api/state HTTP/1.1\r\nHost: x\r\n" + auth,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n" + auth,
        ]
        for head in requests:
            answer = await asyncio.to_thread(raw_request, port_of(live), head)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


async def test_tokens_never_reach_the_access_log(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in the URL or the Referer is written as [redacted]."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    headers = {"Referer": f"{live.url}?token=SECRET1&x=1"}
    await live.get("api/state?token=SECRET2", headers=headers)
    await live.get("healthz?feed_token=SECRET3")
    assert "api/state" in caplog.text and "[redacted]" in caplog.text
    assert "SECRET" not in caplog.text


async def test_metrics_of_a_private_feed_need_its_token(redis_url: str, namespace: str) -> None:
    """With a feed token, /metrics answers 401 without it (or the metrics token)."""
    async with running(redis_url, Keys(namespace), Policy(feed_token="T")) as live:
        async with live.http.get(live.url + "metrics") as resp:
            assert resp.status == 401
        async with live.http.get(live.url + "metrics?token=T") as resp:
            assert resp.status == 200 and "ticker_clients" in await resp.text()
    policy = Policy(feed_token="T", metrics_token="M")
    async with running(redis_url, Keys(namespace), policy) as live:
        headers = {"Authorization": "Bearer M"}
        async with live.http.get(live.url + "metrics", headers=headers) as resp:
            assert resp.status == 200


# -- origins, addresses, sockets, frames -------------------------------------------------------


async def test_a_page_on_a_rebinding_domain_is_refused(live: Live) -> None:
    """Origin and Host both `evil.example`: refused, the Origin is not the server's own."""
    port = port_of(live)
    # evil.example resolves to 127.0.0.1: the request's Host is evil.example, like its Origin.
    rebound = f"ws://evil.example:{port}/ws"
    evil = {"origin": f"http://evil.example:{port}", "host": "127.0.0.1", "port": port}
    assert await status_of(rebound, **evil) == 403
    assert await status_of(live.ws_url, origin=f"http://127.0.0.1:{port}") == 101
    assert await status_of(live.ws_url, origin=f"http://localhost:{port}") == 101


async def test_configured_public_origins_replace_the_servers_address(
    redis_url: str, namespace: str
) -> None:
    """With public origins set, only they (and listed ones) may connect from a browser."""
    policy = Policy(public_origins=frozenset({"https://ticker.example"}))
    async with running(redis_url, Keys(namespace), policy) as live:
        assert await status_of(live.ws_url, origin="https://ticker.example") == 101
        assert await status_of(live.ws_url, origin=f"http://127.0.0.1:{port_of(live)}") == 403


async def test_forwarded_addresses_count_only_from_trusted_proxies(
    redis_url: str, namespace: str
) -> None:
    """Behind a trusted proxy each X-Forwarded-For address has its own connect limit;
    from anyone else the header is ignored."""
    trusting = Policy(connects_per_ip_per_s=0.5, trusted_proxies=parse_networks(["127.0.0.1"]))
    async with running(redis_url, Keys(namespace), trusting) as live:
        codes = [
            await status_of(live.ws_url, additional_headers={"X-Forwarded-For": f"10.0.0.{n}"})
            for n in range(5)
        ]
        assert codes == [101] * 5
    async with running(redis_url, Keys(namespace), Policy(connects_per_ip_per_s=0.5)) as live:
        codes = [
            await status_of(live.ws_url, additional_headers={"X-Forwarded-For": f"10.0.0.{n}"})
            for n in range(5)
        ]
        assert 429 in codes


async def test_client_sockets_get_a_bounded_kernel_send_buffer(
    redis_url: str, namespace: str
) -> None:
    """SO_SNDBUF is set on each client's socket (Linux reports twice the value set)."""
    tuning = Tuning(send_threads=1, socket_buffer=32_768)
    async with (
        running(redis_url, Keys(namespace), tuning=tuning) as live,
        websockets.connect(live.ws_url) as ws,
    ):
        await recv(ws)
        (c,) = live.hub.clients
        sock = c.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 65_536


def close_code_of(sock: socket.socket) -> int | None:
    """Read frames until a close frame (its code) or the end of the stream (None)."""
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 2:
            opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
            start = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if length >= 126:
                if len(buf) < start:
                    break
                length = int.from_bytes(buf[2:start], "big")
            if len(buf) < start + length:
                break
            if opcode == 0x8:
                return int(struct.unpack("!H", buf[start : start + 2])[0])
            buf = buf[start + length :]


async def test_an_unmasked_client_frame_is_closed_with_1002(live: Live) -> None:
    """RFC 6455: a server must close the connection on an unmasked client frame."""
    sock = await asyncio.to_thread(handshake, port_of(live))
    with sock:
        payload = b'{"type": "subscribe"}'
        sock.sendall(bytes([0x81, len(payload)]) + payload)
        assert await asyncio.to_thread(close_code_of, sock) == 1002
    await eventually(lambda: live.hub.metrics.disconnects["unmasked"] == 1)


async def test_a_masked_client_frame_is_taken(live: Live) -> None:
    """The mask check lets a well-formed (masked) subscribe through."""
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await ws.send('{"type": "subscribe", "topics": ["nope"]}')
        assert (await recv_type(ws, "error"))["code"] == "bad_request"


async def test_a_message_too_big_counts_as_refused_too_big(live: Live) -> None:
    """A 10 KB client message: close 1009, counted in ticker_connections_refused_total."""
    async with websockets.connect(live.ws_url) as ws:
        await recv(ws), await recv(ws)
        await ws.send("x" * 10_000)
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
        assert ws.close_code == 1009
    await eventually(lambda: live.hub.metrics.connections_refused["too_big"] == 1)
    async with live.http.get(live.url + "metrics") as resp:
        assert 'ticker_connections_refused_total{reason="too_big"} 1' in await resp.text()


def test_own_origins_take_a_host_header_only_when_it_is_an_address() -> None:
    """Behind a proxy, `Host: 127.0.0.1:9000` is the page's origin; a domain never is."""
    from ticker.guard import own_origins

    own = own_origins("http", ("10.0.0.5", 8080), "127.0.0.1:9000")
    assert own == {"http://10.0.0.5:8080", "http://127.0.0.1:9000"}
    assert own_origins("http", ("10.0.0.5", 8080), "evil.example:8080") == {"http://10.0.0.5:8080"}
    assert "http://localhost:3000" in own_origins("http", None, "localhost:3000")
    assert "http://[::1]:80" in own_origins("http", ("::1", 80, 0, 0), "[::1]:80")


async def test_a_replay_key_of_the_wrong_type_does_not_stop_the_replay_state(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """The replay key written as a string is logged; once right again, it is followed."""
    await live.redis.set(live.keys.replay, "not a hash")
    await eventually(lambda: "could not read the replay's state" in caplog.text)
    await live.redis.delete(live.keys.replay)
    state = {"run": "r", "state": "paused", "heartbeat_ms": 2**53}
    await live.redis.hset(live.keys.replay, "state", orjson.dumps(state))
    await eventually(lambda: (live.hub.replay or {}).get("state") == "paused")
    assert live.hub.healthy() is None


def masked(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def frames_until_close_or_error(sock: socket.socket) -> tuple[int, bytes]:
    """Read frames until a close frame or an `error` message: (opcode, payload)."""
    buf = b""
    while True:
        while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7F if buf[1] & 0x7F < 126 else 0):
            buf += sock.recv(65536)
        opcode, length, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            while len(buf) < 4:
                buf += sock.recv(65536)
            length, start = int.from_bytes(buf[2:4], "big"), 4
        while len(buf) < start + length:
            buf += sock.recv(65536)
        payload, buf = buf[start : start + length], buf[start + length :]
        if opcode == 0x8 or b'"error"' in payload:
            return opcode, payload


async def test_a_masked_frame_sent_with_the_upgrade_request_is_taken(live: Live) -> None:
    """A frame that arrives with the handshake (before the server is ready) is checked
    from its first byte, and a masked one passes."""
    port = port_of(live)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    def exchange() -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10 * UNIT) as sock:
            sock.sendall(request + masked(b"{"))
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            return frames_until_close_or_error(sock)

    opcode, payload = await asyncio.to_thread(exchange)
    assert opcode == 0x1 and b"bad_request" in payload


async def test_a_started_server_takes_a_newest_entry_with_few_fields(
    redis_url: str, namespace: str
) -> None:
    """A newest entry written by hand with one field (no window) is still a state."""
    keys = Keys(namespace)
    async with running(redis_url, keys) as live:
        await live.redis.xadd(keys.feed, {"u": b'{"gmv_fen": 3}'})
        async with running(redis_url, keys) as fresh:
            assert (await fresh.get("api/state"))[1]["gmv_fen"] == 3


async def test_an_error_in_a_handler_is_a_short_json_500_and_a_logged_traceback(
    live: Live, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An HTTP handler's error, and one in a websocket's handshake (which guards itself:
    `guarded` wraps only the HTTP handlers), reach the client as a short JSON body; the
    traceback goes to the log only."""
    from ticker.server import app as server_app

    def boom(*args: Any) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(live.hub, "healthy", boom)
    monkeypatch.setattr(server_app, "_admit", boom)
    for path in ("healthz", "ws"):
        status, body = await live.get(path)
        assert status == 500, path
        assert body == {"error": "internal", "message": "internal error; see the server log"}
    assert caplog.text.count("RuntimeError: secret detail") == 2
