"""`ticker profile check`: replay a scaled day in process and compare it with the profile.

The day is generated exactly as `ticker replay` would (same DayPlan, seed and scale) and
folded with the aggregator's reducer, with no Redis. Every documented point (GMV and
orders) becomes a milestone at its scaled value; the table shows when the replayed total
crossed it against the documented time. A point is within tolerance when the difference
is at most 1% of the documented time since midnight, or 5 s for points in the first five
minutes (where 1% would be shorter than a slot of a miniature day).
"""

import argparse
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from simulator import profile as profiles
from simulator.generator import DayPlan
from simulator.profile import Point, Profile
from ticker.cli import scale_arg
from ticker.core.aggregate import State
from ticker.core.batch import Entry, Milestone, Start
from ticker.core.clock import DAY_MS, format_time_of_day
from ticker.errors import ProfileError

EARLY_MS = 5 * 60_000  # points this early get the fixed tolerance below
EARLY_TOLERANCE_MS = 5_000
ROUND = 64  # batches folded per apply_many, like an aggregator round


@dataclass(frozen=True)
class Check:
    """One documented point against the replay."""

    metric: str  # "gmv" or "orders"
    point: Point
    threshold: int  # scaled, in fen or orders
    replayed_ms: int | None  # None: the replayed day never reached it

    @property
    def tolerance_ms(self) -> int:
        return tolerance_ms(self.point.at_ms)

    @property
    def error_ms(self) -> int | None:
        return None if self.replayed_ms is None else self.replayed_ms - self.point.at_ms

    @property
    def ok(self) -> bool:
        return self.error_ms is not None and abs(self.error_ms) <= self.tolerance_ms


@dataclass(frozen=True)
class Report:
    """What a replayed day came to: the point checks and the folded state."""

    profile: Profile
    plan: DayPlan
    checks: tuple[Check, ...]
    state: State

    @property
    def passed(self) -> int:
        return sum(c.ok for c in self.checks)


def tolerance_ms(at_ms: int) -> int:
    """How far a replayed crossing may be from a documented time of day."""
    return EARLY_TOLERANCE_MS if at_ms <= EARLY_MS else at_ms // 100


def _scaled(value: int, scale: Fraction) -> int:
    return max(1, value * scale.numerator // scale.denominator)


def _entries(plan: DayPlan, meta_start: Start) -> Iterator[list[Entry]]:
    yield [meta_start]
    round_: list[Entry] = []
    for b in plan.batches():
        round_.append(b.as_orders("check"))
        if len(round_) == ROUND:
            yield round_
            round_ = []
    yield round_


def replay(prof: Profile, scale: Fraction, seed: int = 0) -> Report:
    """Generate and fold the whole day at `scale`; check every documented point."""
    try:
        plan = DayPlan(prof, scale, 0, DAY_MS, seed)
    except ValueError as exc:
        raise ProfileError(f"{prof.path.name}: {exc}") from None
    points = [("gmv", p, _scaled(p.value, scale)) for p in prof.gmv_points] + [
        ("orders", p, _scaled(p.value, scale)) for p in prof.order_points
    ]
    rules = tuple(
        Milestone(
            id=f"{metric}{i}",
            label=f"{metric} point {i}",
            metric="gmv_fen" if metric == "gmv" else "orders",
            threshold=threshold,
            documented=format_time_of_day(p.at_ms, millis=False),
        )
        for i, (metric, p, threshold) in enumerate(points)
    )
    meta = dataclasses.replace(plan.meta(), milestones=rules)
    state = State()
    for entries in _entries(plan, Start("check", 0, meta)):
        state.apply_many(entries)
    fired = {f.milestone.id: f.sim_time_ms for f in state.fired}
    checks = tuple(
        Check(metric, p, threshold, fired.get(f"{metric}{i}"))
        for i, (metric, p, threshold) in enumerate(points)
    )
    return Report(prof, plan, checks, state)


def _value(metric: str, value: int) -> str:
    return f"RMB {value // 100:,}" if metric == "gmv" else f"{value:,} orders"


def _seconds(ms: int) -> str:
    return f"{ms / 1000:+.3f} s"


def table(report: Report) -> list[str]:
    """The report as lines of text; the last reads `N/N points within tolerance`."""
    rows = [("point", "documented", "replayed", "error", "tolerance", "")]
    for c in report.checks:
        rows.append(
            (
                _value(c.metric, c.point.value),
                format_time_of_day(c.point.at_ms, millis=False),
                "never" if c.replayed_ms is None else format_time_of_day(c.replayed_ms),
                "-" if c.error_ms is None else _seconds(c.error_ms),
                f"±{c.tolerance_ms / 1000:.1f} s",
                "ok" if c.ok else "OUT",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    s, plan = report.state, report.plan
    view = s.view()
    intl = s.orders - int(s.cty_orders[0]) if len(s.cty_orders) else 0
    lines += [
        "",
        f"final: RMB {s.gmv_fen / 100:,.2f} in {s.orders:,} orders "
        f"(plan: RMB {plan.total_gmv / 100:,.2f} in {plan.total_orders:,})",
        f"international orders: {intl:,} ({100 * intl / max(1, s.orders):.2f}%)",
        f"brands over the line: {view['brands_over_100m']} "
        f"(profile: {report.profile.brands_over_100m})",
        f"{report.passed}/{len(report.checks)} points within tolerance",
    ]
    return lines


def _run(args: argparse.Namespace) -> int:
    report = replay(profiles.load(args.profile), args.scale, args.seed)
    print("\n".join(table(report)), flush=True)
    return 0 if report.passed == len(report.checks) else 1


def register(sub: Any, add_redis: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `ticker profile check` (no Redis: the replay runs in process)."""
    del add_redis
    p = sub.add_parser("profile", help="work with festival profiles")
    actions = p.add_subparsers(
        dest="profile_command", metavar="check", required=True, parser_class=type(p)
    )
    c = actions.add_parser(
        "check",
        help="replay a scaled day in process and compare it with the documented points",
    )
    c.add_argument("profile", help="a bundled profile (2017, 2018, 2019) or a .toml path")
    c.add_argument(
        "--scale",
        type=scale_arg,
        default=Fraction(1, 1000),
        help="shrink the day by this factor (default 0.001: about a million orders)",
    )
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.set_defaults(handler=_run)
