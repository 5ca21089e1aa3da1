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
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ticker.core.aggregate import OTHER, State
from ticker.core.batch import (
    BadEntry,
    End,
    Orders,
    ReplayMeta,
    decode,
    encode_end,
    encode_start,
)
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


AUDIT = "audit"  # a consumer group that reads nothing: the stream keeps the whole run


async def start(
    settings: Settings, data: dict[str, Any], run: str | None, new: bool, audit: bool = False
) -> str:
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
        if await r.exists(keys.orders):
            await r.xgroup_destroy(keys.orders, AUDIT)  # the last run's kept entries go
        async with r.pipeline(transaction=True) as tx:
            if audit:
                tx.xgroup_create(keys.orders, AUDIT, id="$", mkstream=True)
            tx.unlink(keys.producers, keys.order_ids)  # a large id set is freed in the background
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
    s.add_argument(
        "--audit",
        action="store_true",
        help="keep the whole run in the orders stream for `ticker live verify`",
    )
    add_redis(s)
    s.set_defaults(handler=_start)
    e = live.add_parser("end", help="close the live run")
    add_redis(e)
    e.set_defaults(handler=_end)
    st = live.add_parser("status", help="the live run and its producers, as JSON")
    add_redis(st)
    st.set_defaults(handler=_status)
    v = live.add_parser(
        "verify",
        help="recount the live run from the orders stream (started with --audit) and "
        "compare it with the aggregator's state",
    )
    add_redis(v)
    v.set_defaults(handler=_verify)


def _start(args: argparse.Namespace) -> int:
    if not args.event and not args.title:
        raise UsageError("give an event file or --title")
    if args.run is not None and not 0 < len(args.run) <= 64:
        raise UsageError("--run must be 1..64 characters")
    settings = Settings.from_env(args.redis_url, args.namespace)
    data = load_event(args.event, args.title, args.day)
    run = asyncio.run(start(settings, data, args.run, args.new, args.audit))
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


@dataclass
class Recount:
    """A live run counted again from its stream entries, without the aggregator's code:
    each producer's batches 1, 2, ... up to its first gap, each once."""

    orders: int = 0
    gmv_fen: int = 0
    ended: bool = False
    producers: dict[str, int] = field(default_factory=dict)
    # column -> name -> [GMV fen, orders]
    tallies: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    minutes: dict[int, list[int]] = field(default_factory=dict)  # paid-at minute -> same


def recount(run: str, meta: ReplayMeta, entries: list[dict[bytes, bytes]]) -> Recount:
    out = Recount(tallies={c: {} for c in ("cat", "cty", "reg", "brd")})
    batches: dict[tuple[str, int], Orders] = {}
    for fields in entries:
        try:
            entry = decode(fields)
        except BadEntry:
            continue
        if entry.run != run:
            continue
        if isinstance(entry, End):
            out.ended = True
        elif isinstance(entry, Orders) and entry.producer:
            batches.setdefault((entry.producer, entry.seq), entry)
    for producer in sorted({p for p, _ in batches}):
        seq = 1
        while (producer, seq) in batches:
            b = batches[producer, seq]
            out.orders += b.n
            out.gmv_fen += int(b.amt.sum())
            named = dict(b.names)
            for column in ("cat", "cty", "reg", "brd"):
                names = named.get(column, meta.name_lists[column])
                for i, amt in zip(getattr(b, column).tolist(), b.amt.tolist(), strict=True):
                    t = out.tallies[column].setdefault(names[i], [0, 0])
                    t[0] += amt
                    t[1] += 1
            for at, amt in zip(b.at.tolist(), b.amt.tolist(), strict=True):
                m = out.minutes.setdefault(at // 60_000, [0, 0])
                m[0] += amt
                m[1] += 1
            seq += 1
        out.producers[producer] = seq - 1
    return out


def compare(state: State, again: Recount) -> list[str]:
    """What differs between the aggregator's state and the recount."""
    assert state.meta is not None
    diffs = []
    for name in ("orders", "gmv_fen", "ended", "producers"):
        if getattr(state, name) != getattr(again, name):
            diffs.append(f"{name}: live {getattr(state, name)}, recounted {getattr(again, name)}")
    arrays = {
        "cat": state.cat_gmv,
        "cty": state.cty_gmv,
        "reg": state.reg_gmv,
        "brd": state.brand_gmv,
    }
    for column, names in state.meta.name_lists.items():
        if OTHER in names and OTHER not in again.tallies[column]:
            continue  # past the cap: names were pooled in arrival order
        live = {n: int(g) for n, g in zip(names, arrays[column].tolist(), strict=False) if g}
        counted = {n: t[0] for n, t in again.tallies[column].items()}
        if live != counted:
            diffs.append(f"{column} tallies differ: live {live}, recounted {counted}"[:400])
    gmv = orders = 0
    cumulative = {}
    for minute in range(24 * 60):
        cumulative[minute * 60_000] = [gmv, orders]
        g, o = again.minutes.get(minute, [0, 0])
        gmv, orders = gmv + g, orders + o
    cumulative[24 * 60 * 60_000] = [gmv, orders]
    for point in state.fixed:
        if cumulative.get(point[0]) != point[1:]:
            diffs.append(f"curve point {point}: recounted {cumulative.get(point[0])}")
            break
    return diffs


async def verify(settings: Settings) -> tuple[State, Recount, list[str]]:
    keys = settings.keys
    r = await connect(settings.redis_url)
    try:
        run, meta = await _any_live_run(r, keys)
        groups = [g["name"] for g in await r.xinfo_groups(keys.orders)]
        if AUDIT.encode() not in groups and AUDIT not in groups:
            raise TickerError(
                "the orders stream does not keep this run: start live runs with --audit "
                "to verify them"
            )
        entries = [fields for _, fields in await r.xrange(keys.orders)]
        raw, brands = await r.hmget(keys.state, ["state", "brands"])
    finally:
        await r.aclose()
    if raw is None:
        raise TickerError("no aggregator state yet")
    state = State.loads(raw, brands)
    if state.run != run:
        raise TickerError(f"the aggregator has not applied the live run {run} yet")
    again = recount(run, meta, entries)
    return state, again, compare(state, again)


async def _any_live_run(r: Any, keys: Any) -> tuple[str, ReplayMeta]:
    run, meta = await r.hmget(keys.live, ["run", "meta"])
    if run is None:
        raise TickerError(f"no live run in namespace {keys.namespace!r}")
    return run.decode(), ReplayMeta.from_json(meta)


def _verify(args: argparse.Namespace) -> int:
    settings = Settings.from_env(args.redis_url, args.namespace)
    state, again, diffs = asyncio.run(verify(settings))
    print(
        f"run {state.run}: live {state.orders:,} orders, {state.gmv_fen / 100:,.2f}; "
        f"recounted from the stream {again.orders:,} orders, {again.gmv_fen / 100:,.2f}"
        f"{' (held now: ' + str(state.held) + ')' if state.held else ''}"
    )
    for d in diffs:
        print(f"DIFFERENT {d}")
    if diffs:
        print(f"verify: FAILED: {len(diffs)} difference(s)", file=sys.stderr)
        return 1
    print("verify: OK: totals, producers, every name's tally and the curve are exactly equal")
    return 0
