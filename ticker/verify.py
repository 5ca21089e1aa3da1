"""`ticker verify`: audit the live totals against an independent recomputation.

The run's start entry names its profile, scale, window, seed and batch size, so the whole
run can be regenerated and folded again in this process, up to the last batch the live
state has applied. Every total, every per-dimension tally and the milestone list must be
equal; so must every entry of the run still in the orders stream and its regenerated twin.
"""

import argparse
import asyncio
import sys
from fractions import Fraction
from typing import Any

import numpy as np

from simulator import profile as profiles
from simulator.generator import DayPlan
from ticker.core.aggregate import State
from ticker.core.batch import BadEntry, End, Orders, Start, decode
from ticker.errors import TickerError, UsageError
from ticker.redis_io import connect
from ticker.settings import Settings

DIMENSIONS = ("cat_gmv", "cat_orders", "cty_gmv", "cty_orders", "reg_gmv", "reg_orders")


def recompute(live: State, profile_name: str | None = None) -> tuple[State, DayPlan]:
    """Regenerate the live state's run and fold it up to the live state's last batch."""
    meta = live.meta
    if meta is None or live.run is None:
        raise TickerError("the live state has no replay run to verify yet")
    if not meta.batch_size:
        raise TickerError("this run's start entry predates `ticker verify` (no seed recorded)")
    prof = profiles.load(profile_name or meta.profile)
    plan = DayPlan(prof, Fraction(meta.scale), meta.from_ms, meta.to_ms, meta.seed, meta.batch_size)
    state = State()
    state.apply(Start(live.run, 0, plan.meta()))
    group: list[Orders] = []
    for batch in plan.batches():
        if batch.seq > live.last_seq:
            break
        group.append(batch.as_orders(live.run))
        if len(group) == 256:
            state.apply_many(list(group))
            group.clear()
    state.apply_many(list(group))
    if live.ended:
        state.apply(End(live.run, plan.end_seq, plan.to_ms))
    return state, plan


def compare(live: State, again: State) -> list[tuple[str, Any, Any]]:
    """(what, live, recomputed) for everything that differs."""
    diffs: list[tuple[str, Any, Any]] = []
    for name in ("gmv_fen", "orders", "last_seq", "ended"):
        if getattr(live, name) != getattr(again, name):
            diffs.append((name, getattr(live, name), getattr(again, name)))
    assert live.meta is not None
    labels = {"cat": live.meta.categories, "cty": live.meta.countries, "reg": live.meta.regions}
    for name in DIMENSIONS:
        a, b = getattr(live, name), getattr(again, name)
        if a.shape != b.shape:
            diffs.append((name, f"{len(a)} entries", f"{len(b)} entries"))
            continue
        for i in np.flatnonzero(a != b):
            diffs.append((f"{name}[{labels[name[:3]][i]}]", int(a[i]), int(b[i])))
    fired = [(f.milestone.id, f.sim_time_ms) for f in live.fired]
    fired_again = [(f.milestone.id, f.sim_time_ms) for f in again.fired]
    if fired != fired_again:
        diffs.append(("milestones", fired, fired_again))
    again_points = {p[0]: p for p in again.fixed}
    for point in live.fixed:
        if point[0] > live.meta.from_ms and again_points.get(point[0]) != point:
            diffs.append((f"curve point at {point[0]} ms", point, again_points.get(point[0])))
            break  # the first wrong minute says enough
    return diffs


async def check_stream(settings: Settings, live: State, plan: DayPlan) -> tuple[int, list[str]]:
    """Compare the run's entries still in the orders streams with their regenerated twins."""
    shards = live.meta.shards if live.meta else 1
    streams = [settings.keys] if shards == 1 else [settings.keys.shard(i) for i in range(shards)]
    r = await connect(settings.redis_url)
    try:
        entries = [e for k in streams for e in await r.xrange(k.orders, count=100_000)]
    finally:
        await r.aclose()
    wanted: dict[int, Orders] = {}
    for _entry_id, fields in entries:
        try:
            entry = decode(fields)
        except BadEntry:
            continue
        if isinstance(entry, Orders) and entry.run == live.run:
            wanted[entry.seq] = entry
    problems = []
    if wanted:
        for batch in plan.batches(after_seq=min(wanted) - 1):
            if batch.seq > max(wanted):
                break
            twin = wanted.get(batch.seq)
            if twin is None:
                continue
            for name, column in batch.columns.items():
                if not np.array_equal(getattr(twin, name), column):
                    problems.append(f"stream entry seq {batch.seq}: column {name} differs")
                    break
    return len(wanted), problems


def register(sub: "argparse._SubParsersAction[Any]", add_redis: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="audit the live totals against an independent recomputation from the profile and seed",
    )
    p.add_argument("--profile", help="profile name or path, if not the run's bundled one")
    add_redis(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(args.redis_url, args.namespace)

    async def load() -> State:
        r = await connect(settings.redis_url)
        try:
            raw, brands = await r.hmget(settings.keys.state, ["state", "brands"])
        finally:
            await r.aclose()
        if raw is None:
            raise UsageError(f"no aggregator state in namespace {settings.keys.namespace!r}")
        return State.loads(raw, brands)

    live = asyncio.run(load())
    again, plan = recompute(live, args.profile)
    diffs = compare(live, again)
    present, problems = asyncio.run(check_stream(settings, live, plan))
    print(
        f"run {live.run}: {live.orders:,} orders, RMB {live.gmv_fen / 100:,.2f} "
        f"(up to batch {live.last_seq}{', ended' if live.ended else ''})"
    )
    print(
        f"recomputed from profile {plan.profile.name}, seed {plan.seed}, scale "
        f"{live.meta.scale if live.meta else '?'}: "
        f"{again.orders:,} orders, RMB {again.gmv_fen / 100:,.2f}"
    )
    for what, a, b in diffs:
        print(f"DIFFERENT {what}: live {a}, recomputed {b}")
    for problem in problems:
        print(f"DIFFERENT {problem}")
    print(
        f"{present} stream entries of the run still present; "
        f"{present - len(problems)} match their regenerated batches"
    )
    checked = 4 + len(DIMENSIONS) + 1
    if diffs or problems:
        print(f"verify: FAILED: {len(diffs) + len(problems)} difference(s)", file=sys.stderr)
        return 1
    print(
        f"verify: OK: totals, {len(DIMENSIONS)} per-dimension tallies and milestones "
        f"({checked} checks) are exactly equal"
    )
    return 0
