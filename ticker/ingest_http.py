"""`POST /api/orders`: real orders over HTTP into the open live run, ready to mount.

    from ticker import ingest_http
    ingest_http.setup(app, redis_url, keys, token)   # in the server's app factory

A request carries `Authorization: Bearer <ingest token>` and orders as a JSON array or as
NDJSON (one object a line), each as `ticker.core.orders` describes. Answers (JSON):

- 202 `{"accepted": n, "duplicates": d, "run": …}` once every order of the request is in
  the orders stream (Redis has taken the write; with `appendfsync always` it is on disk);
- 422 `{"error": "invalid_orders", "errors": [{"line", "field", "reason"}, …]}`: the
  request is refused **whole** when any line is bad (nothing of it is taken: fix the lines
  and send the request again);
- 401 without a token, 403 with a wrong one, 409 when no live run is open, 413 above
  `max_bytes`, 503 when Redis is unreachable (send the same request again).

Exactly once: an order id is taken once per live run (the set `Keys.order_ids`), so a
request sent again after a lost answer, or an order sent twice, counts once (`duplicates`
says how many were already in). The check of the ids, their recording, the batches'
sequence numbers (producer `http`, numbered by Redis itself, so any number of servers
share one gapless sequence) and the XADDs are one script: all of a request or none.
"""

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import ResponseError

from ticker.core.batch import ReplayMeta
from ticker.core.orders import Batcher, Order, OrderError, parse_order
from ticker.keys import Keys
from ticker.redis_io import TRANSIENT, client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("ticker.ingest")

PRODUCER = "http"
MAX_BYTES = 16 * 1024 * 1024
MAX_ERRORS = 100  # errors listed in a 422 (the count says how many there were)
BATCH = 16_384  # orders per stream entry

# KEYS: live hash, producers hash, orders stream, order ids set
# ARGV: run, producer, number of ids N, the N ids, then per entry: number of field/value
#       pairs P, then P pairs (the script adds `seq`)
# Returns {'ok', entries} or {'dup', index, ...} (1-based indices of ids already taken;
# nothing was written) or an error NOLIVE.
WRITE = """
local live = redis.call('HMGET', KEYS[1], 'run', 'ended')
if live[1] ~= ARGV[1] then return redis.error_reply('NOLIVE the live run is not ' .. ARGV[1]) end
if live[2] == '1' then return redis.error_reply('NOLIVE the live run ' .. ARGV[1] .. ' ended') end
local n = tonumber(ARGV[3])
local dup = {'dup'}
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[4], ARGV[3 + i]) == 1 then dup[#dup + 1] = i end
end
if #dup > 1 then return dup end
local i = 4
while i <= 3 + n do
  local j = math.min(i + 999, 3 + n)
  redis.call('SADD', KEYS[4], unpack(ARGV, i, j))
  i = j + 1
end
local entries = 0
while i <= #ARGV do
  local p = tonumber(ARGV[i])
  local seq = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  local args = {'seq', tostring(seq)}
  for k = i + 1, i + 2 * p do args[#args + 1] = ARGV[k] end
  redis.call('XADD', KEYS[3], '*', unpack(args))
  entries = entries + 1
  i = i + 1 + 2 * p
end
return {'ok', entries}
"""

SETTINGS = web.AppKey("ingest_settings", dict)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def parse_body(
    body: bytes, json_array: bool, meta: ReplayMeta
) -> tuple[list[Order], list[OrderError]]:
    """The request's orders, and an error for each bad line (numbered from 1)."""
    items: list[tuple[int, Any]] = []
    errors: list[OrderError] = []
    if json_array:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return [], [OrderError("body", f"not a JSON array ({exc})", 1)]
        if not isinstance(data, list):
            return [], [OrderError("body", "a JSON body must be an array of orders", 1)]
        items = list(enumerate(data, 1))
    else:
        for number, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                items.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                errors.append(OrderError("line", f"not JSON ({exc})", number))
    orders = []
    for number, item in items:
        try:
            orders.append(parse_order(item, meta.origin_ms, meta.utc_offset_minutes))
        except OrderError as exc:
            errors.append(exc.at_line(number))
    if not items and not errors:
        errors.append(OrderError("body", "no orders", 1))
    return orders, errors


def _entries(orders: list[Order], home: str, run: str) -> list[dict[bytes, bytes]]:
    """The orders as batches of the live run (without `seq`: the script numbers them)."""
    out: list[dict[bytes, bytes]] = []
    batch = Batcher(home, BATCH)
    for order in orders:
        if not batch.fits(order):
            out.append(batch.fields(run, PRODUCER, 1))
            batch = Batcher(home, BATCH)
        batch.add(order)
    if len(batch):
        out.append(batch.fields(run, PRODUCER, 1))
    for fields in out:
        del fields[b"seq"]
    return out


async def handle(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return _json(
            401, {"error": "unauthorized", "message": "send Authorization: Bearer <ingest token>"}
        )
    if not hmac.compare_digest(header[7:].strip().encode(), settings["token"].encode()):
        return _json(403, {"error": "forbidden", "message": "wrong ingest token"})
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > settings["max_bytes"]:
            return _json(
                413,
                {
                    "error": "too_large",
                    "message": f"at most {settings['max_bytes']:,} bytes a request",
                },
            )
    keys = settings["keys"]
    try:
        run, meta = await _live(settings)
    except LookupError as exc:
        return _json(409, {"error": "no_live_run", "message": str(exc)})
    except TRANSIENT:
        return _json(
            503, {"error": "unavailable", "message": "Redis is unreachable; send the request again"}
        )
    json_array = request.content_type == "application/json" or body.lstrip()[:1] == b"["
    orders, errors = parse_body(bytes(body), json_array, meta)
    if errors:
        return _json(
            422,
            {
                "error": "invalid_orders",
                "message": f"{len(errors)} bad line(s); nothing of this request was taken",
                "errors": [e.to_dict() for e in errors[:MAX_ERRORS]],
            },
        )
    # An id twice in one request counts once, like an id sent again later.
    unique = list({o.id: o for o in reversed(orders)}.values())[::-1]
    duplicates = len(orders) - len(unique)
    script = settings["script"]
    while unique:
        args: list[Any] = [run, PRODUCER, len(unique), *(o.id for o in unique)]
        for fields in _entries(unique, meta.countries[0], run):
            args.append(len(fields))
            for k, v in fields.items():
                args += [k, v]
        try:
            reply = await script(
                keys=[keys.live, keys.producers, keys.orders, keys.order_ids], args=args
            )
        except TRANSIENT:
            return _json(
                503,
                {"error": "unavailable", "message": "Redis is unreachable; send the request again"},
            )
        except ResponseError as exc:
            if str(exc).startswith("NOLIVE"):
                settings["live"] = None
                return _json(409, {"error": "no_live_run", "message": str(exc)[7:]})
            raise
        if reply[0] == b"ok":
            break
        taken = {int(i) - 1 for i in reply[1:]}
        duplicates += len(taken)
        unique = [o for i, o in enumerate(unique) if i not in taken]
    return _json(202, {"accepted": len(unique), "duplicates": duplicates, "run": run})


async def _live(settings: dict[str, Any]) -> tuple[str, ReplayMeta]:
    """The open live run (cached while its name is unchanged); LookupError if none."""
    keys: Keys = settings["keys"]
    run, ended = await settings["redis"].hmget(keys.live, ["run", "ended"])
    if run is None or ended == b"1":
        raise LookupError(
            "no live run is open" if run is None else f"the live run {run.decode()} has ended"
        )
    cached = settings.get("live")
    if cached is None or cached[0] != run.decode():
        raw = await settings["redis"].hget(keys.live, "meta")
        cached = settings["live"] = (run.decode(), ReplayMeta.from_json(raw))
    return cached


def setup(
    app: web.Application,
    redis_url: str,
    keys: Keys,
    token: str,
    path: str = "/api/orders",
    max_bytes: int = MAX_BYTES,
    wrap: Callable[[Handler], Handler] = lambda handler: handler,
) -> None:
    """Mount `POST {path}` on `app` (its handler passed through `wrap`, e.g. the server's
    error guard), with its own Redis client for the app's lifetime."""
    if not token:
        raise ValueError("an ingest token is required")
    settings: dict[str, Any] = {"token": token, "keys": keys, "max_bytes": max_bytes, "live": None}
    app[SETTINGS] = settings

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        settings["redis"] = client(redis_url)
        settings["script"] = settings["redis"].register_script(WRITE)
        yield
        await settings["redis"].aclose()

    app.cleanup_ctx.append(lifetime)
    app.router.add_post(path, wrap(handle))
