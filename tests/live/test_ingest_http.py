"""POST /api/orders on its own real aiohttp app (port 0) with a real Redis and a real
aggregator: tokens, atomic refusal of a request with a bad line, ids counted once."""

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import UNIT, Ticker, stop
from tests.live.test_live_run import _live, _order, _state
from ticker import ingest_http
from ticker.keys import Keys

TOKEN = "ingest-secret"


@pytest.fixture
async def url(ticker: Ticker) -> AsyncIterator[str]:
    """The ingestion handler mounted on a bare app, on a free port of 127.0.0.1."""
    app = web.Application()
    ingest_http.setup(app, ticker.redis_url, Keys(ticker.namespace), TOKEN)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/orders"
    await runner.cleanup()


@pytest.fixture
def live(ticker: Ticker) -> Iterator[Ticker]:
    """An open live run with an aggregator; the test ends it (`_end`)."""
    _live(ticker)
    agg = ticker.start("aggregate", "--burst")
    yield ticker
    stop(agg)


async def _post(
    url: str, body: bytes | list[Any], token: str | None = TOKEN, json: bool = False
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if json:
        headers["Content-Type"] = "application/json"
    data = orjson.dumps(body) if isinstance(body, list) else body
    if isinstance(body, list):
        headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=headers) as r:
        return r.status, await r.json()


def _ndjson(orders: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(o) for o in orders)


async def _end(ticker: Ticker) -> None:
    proc = await asyncio.create_subprocess_exec(*ticker.args("live", "end"))
    assert await proc.wait() == 0
    for _ in range(int(600 * UNIT)):
        if _state(ticker).ended:
            return
        await asyncio.sleep(0.05)


async def test_orders_without_a_token_or_with_a_wrong_one_are_refused(
    url: str, live: Ticker
) -> None:
    """401 without a token, 403 with a wrong one."""
    assert (await _post(url, [_order(1)], None))[0] == 401
    assert (await _post(url, [_order(1)], "guess"))[0] == 403


async def test_ndjson_and_json_orders_are_accepted_and_counted(url: str, live: Ticker) -> None:
    """200 NDJSON orders and 100 as a JSON array: 202 each, 300 orders counted."""
    status, body = await _post(url, _ndjson([_order(i) for i in range(200)]))
    assert (status, body["accepted"]) == (202, 200)
    assert (await _post(url, [_order(i) for i in range(200, 300)]))[0] == 202
    await _end(live)
    assert (_state(live).orders, _state(live).gmv_fen) == (300, 300_000)


async def test_a_request_with_a_bad_line_is_refused_whole_with_each_reason(
    url: str, live: Ticker
) -> None:
    """Lines 2 and 4 bad: 422 naming both (line, field, reason); none of its orders counted."""
    orders = [_order(1), _order(2, cents=0), _order(3), {**_order(4), "paid_at": "soon"}]
    status, body = await _post(url, _ndjson(orders))
    assert status == 422
    assert [(e["line"], e["field"]) for e in body["errors"]] == [(2, "amount"), (4, "paid_at")]
    await _post(url, [_order(5)])
    await _end(live)
    assert _state(live).orders == 1


async def test_a_request_sent_again_and_an_order_sent_twice_count_once(
    url: str, live: Ticker
) -> None:
    """The same 50 orders twice, then 10 of them with 10 new: 60 orders, duplicates said."""
    orders = [_order(i) for i in range(50)]
    assert (await _post(url, orders))[1]["accepted"] == 50
    assert (await _post(url, orders))[1]["duplicates"] == 50
    status, body = await _post(url, orders[:10] + [_order(i) for i in range(100, 110)])
    assert (status, body["accepted"], body["duplicates"]) == (202, 10, 10)
    await _end(live)
    assert _state(live).orders == 60


async def test_orders_without_a_live_run_get_409(url: str, ticker: Ticker) -> None:
    """No live run open: 409 no_live_run."""
    status, body = await _post(url, [_order(1)])
    assert (status, body["error"]) == (409, "no_live_run")


async def test_a_json_body_that_is_not_an_array_is_refused(url: str, live: Ticker) -> None:
    """A JSON object instead of an array: 422 saying the body must be an array."""
    status, body = await _post(url, b'{"id": 1}', json=True)
    assert status == 422
    assert body["errors"][0]["reason"] == "a JSON body must be an array of orders"


async def test_a_request_above_the_size_limit_gets_413(ticker: Ticker, live: Ticker) -> None:
    """A body over max_bytes: 413 and nothing taken."""
    app = web.Application()
    ingest_http.setup(app, ticker.redis_url, Keys(ticker.namespace), TOKEN, max_bytes=1_000)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        body = _ndjson([_order(i) for i in range(100)])
        status, _ = await _post(f"http://127.0.0.1:{sock.getsockname()[1]}/api/orders", body)
    finally:
        await runner.cleanup()
    assert status == 413


async def test_a_shop_posts_orders_to_ticker_serve_and_sees_them_in_the_state(
    live: Ticker,
) -> None:
    """`ticker serve --ingest-token` mounts POST /api/orders; the orders reach /api/state."""
    from tests.conftest import serving

    with serving(live, "--ingest-token", TOKEN) as server:
        status, _ = await _post(server.url + "api/orders", _ndjson([_order(i) for i in range(40)]))
        assert status == 202
        assert (await _post(server.url + "api/orders", [_order(1)], "guess"))[0] == 403
        for _ in range(int(600 * UNIT)):
            async with aiohttp.ClientSession() as s, s.get(server.url + "api/state") as r:
                state = await r.json()
            if state["orders"] == 40:
                break
            await asyncio.sleep(0.05)
        assert (state["orders"], state["gmv_fen"]) == (40, 40_000)
    await _end(live)


async def test_ticker_serve_without_an_ingest_token_has_no_orders_endpoint(ticker: Ticker) -> None:
    """No token, no endpoint: POST /api/orders is not served (404 or 405)."""
    from tests.conftest import serving

    with serving(ticker) as server:
        async with aiohttp.ClientSession() as s:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with s.post(server.url + "api/orders", data=b"{}", headers=headers) as r:
                status = r.status
    assert status in (404, 405)
