"""`ticker live start|end|status`: open and close a live run fed by real orders.

`live start` writes the run's start entry (a `ReplayMeta` with `live: true`, built from an
event file or flags by `ticker.core.orders.event_meta`) and names the run in the hash
`Keys.live`, where producers find it; in the same transaction it clears the producers'
sequence numbers and the order ids of the previous live run. `live end` writes the run's
end entry (seq 1) and marks the run ended: producers' later batches are refused.
"""

import argparse
import asyncio
import datetime as dt
import os
import time
import tomllib
from pathlib import Path
from typing import Any

import orjson

from ticker.core.aggregate import State
from ticker.core.batch import encode_end, encode_start
from ticker.core.clock import DAY_MS
from ticker.core.orders import EventError, event_meta
from ticker.errors import TickerError, UsageError
from ticker.producer import live_run
from ticker.redis_io import connect
from ticker.settings import Settings


def load_event(path: str | None, title: str | None, day: str | None) -> dict[str, Any]:
    """An event's settings: the file's, with --title and --day on top."""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from None
    if title:
        data["title"] = title
    if day:
        data["day"] = day
    return data


async def start(settings: Settings, data: dict[str, Any], run: str | None, new: bool) -> str:
    try:
        meta = event_meta(data)
    except EventError as exc:
        raise UsageError(f"event: {exc}") from None
    keys = settings.keys
    run = run or f"live-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{os.urandom(2).hex()}"
    r = await connect(settings.redis_url)
    try:
        current, ended = await r.hmget(keys.live, ["run", "ended"])
        if current is not None and ended != b"1" and not new:
            raise UsageError(
                f"the live run {current.decode()} is still open: end it first (`ticker live "
                "end`), or pass --new to replace it (its totals start again from zero)"
            )
        async with r.pipeline(transaction=True) as tx:
            tx.delete(keys.producers, keys.order_ids)
            tx.hset(keys.live, mapping={"run": run, "meta": meta.to_json(), "ended": "0"})
            tx.xadd(keys.orders, encode_start(run, meta))
            await tx.execute()
    finally:
        await r.aclose()
    return run


async def end(settings: Settings) -> tuple[str, int]:
    keys = settings.keys
    r = await connect(settings.redis_url)
    try:
        run, meta = await live_run(r, keys)
        t = min(max(int(time.time() * 1000) - meta.origin_ms, 0), DAY_MS)
        async with r.pipeline(transaction=True) as tx:
            tx.hset(keys.live, "ended", "1")
            tx.xadd(keys.orders, encode_end(run, 1, t))
            await tx.execute()
    finally:
        await r.aclose()
    return run, t


async def status(settings: Settings) -> dict[str, Any]:
    """The live run's name, and the aggregator's view of its producers."""
    keys = settings.keys
    r = await connect(settings.redis_url)
    try:
        run, ended = await r.hmget(keys.live, ["run", "ended"])
        written = await r.hgetall(keys.producers)
        raw, brands = await r.hmget(keys.state, ["state", "brands"])
    finally:
        await r.aclose()
    if run is None:
        raise TickerError(f"no live run in namespace {keys.namespace!r}")
    state = State.loads(raw, brands) if raw else State()
    applied = state.producers if state.run == run.decode() else {}
    return {
        "run": run.decode(),
        "ended": ended == b"1",
        "orders": state.orders if state.run == run.decode() else 0,
        "gmv_fen": state.gmv_fen if state.run == run.decode() else 0,
        "producers": {
            k.decode(): {
                "written": int(v),
                "applied": applied.get(k.decode(), 0),
                "gaps": state.producer_gaps.get(k.decode(), 0),
            }
            for k, v in written.items()
        },
        "held": state.held,
        "gaps": state.gaps,
        "duplicates": state.duplicates,
        "dead_letters": state.dead_letters,
    }


def register(sub: "argparse._SubParsersAction[Any]", add_redis: Any) -> None:
    p = sub.add_parser("live", help="open or close a live run fed by real orders")
    live = p.add_subparsers(dest="live_command", required=True)
    s = live.add_parser("start", help="open a live run (an event file, or --title alone)")
    s.add_argument("event", nargs="?", help="the event's TOML file (see docs/live.md)")
    s.add_argument("--title", help="the page's headline (overrides the file's)")
    s.add_argument("--day", help="the event's day, YYYY-MM-DD (default: today)")
    s.add_argument("--run", help="run id (default live-<UTC time>-<random>)")
    s.add_argument("--new", action="store_true", help="replace a live run still open")
    add_redis(s)
    s.set_defaults(handler=_start)
    e = live.add_parser("end", help="close the live run")
    add_redis(e)
    e.set_defaults(handler=_end)
    st = live.add_parser("status", help="the live run and its producers, as JSON")
    add_redis(st)
    st.set_defaults(handler=_status)


def _start(args: argparse.Namespace) -> int:
    if not args.event and not args.title:
        raise UsageError("give an event file or --title")
    if args.run is not None and not 0 < len(args.run) <= 64:
        raise UsageError("--run must be 1..64 characters")
    settings = Settings.from_env(args.redis_url, args.namespace)
    data = load_event(args.event, args.title, args.day)
    run = asyncio.run(start(settings, data, args.run, args.new))
    print(f"live run {run} open in namespace {settings.keys.namespace!r}")
    return 0


def _end(args: argparse.Namespace) -> int:
    settings = Settings.from_env(args.redis_url, args.namespace)
    run, t = asyncio.run(end(settings))
    print(f"live run {run} ended at {t // 3_600_000:02d}:{t // 60_000 % 60:02d}")
    return 0


def _status(args: argparse.Namespace) -> int:
    settings = Settings.from_env(args.redis_url, args.namespace)
    print(orjson.dumps(asyncio.run(status(settings)), option=orjson.OPT_INDENT_2).decode())
    return 0
