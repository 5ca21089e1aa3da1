"""Festival profiles: TOML files of documented figures, validated on load.

A bad file raises ProfileError naming the field and what is wrong with it.
"""

import itertools
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ticker.core.clock import DAY_MS, parse_time_of_day
from ticker.errors import ProfileError

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class Point:
    """A documented cumulative value at a time of day."""

    at_ms: int
    value: int
    source: str | None = None


@dataclass(frozen=True)
class Weighted:
    name: str
    weight: int


@dataclass(frozen=True)
class MilestoneRule:
    id: str
    label: str
    metric: str  # "gmv" (threshold in yuan) or "orders"
    threshold: int
    documented: str | None


@dataclass(frozen=True)
class Profile:
    """One festival day as documented. Money in fen; times in ms since midnight."""

    name: str
    title: str
    usd_rate: Decimal
    final_gmv_fen: int
    final_orders: int
    last_year_gmv_fen: int
    peak_orders_per_s: int
    international_share: Decimal
    brands: int
    gmv_points: tuple[Point, ...]
    order_points: tuple[Point, ...]
    milestones: tuple[MilestoneRule, ...]
    categories: tuple[Weighted, ...]
    countries: tuple[Weighted, ...]
    regions: tuple[Weighted, ...]
    path: Path
    last_year_points: tuple[Point, ...] = ()


def available() -> list[str]:
    """Names of the bundled profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    """A bundled profile's name (e.g. `2018`) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        if not candidate.is_file():
            raise ProfileError(f"profile file {name_or_path} does not exist")
        return candidate
    bundled = PROFILE_DIR / f"{name_or_path}.toml"
    if not bundled.is_file():
        raise ProfileError(
            f"unknown profile {name_or_path!r}; choose one of "
            f"{', '.join(available())} or give a path to a .toml file"
        )
    return bundled


def load(name_or_path: str) -> Profile:
    path = resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    return _Reader(path, data).profile()


class _Reader:
    """Reads fields with messages that name the field (`gmv[3].at`) and the problem."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    def fail(self, field: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.path.name}: {field}: {problem}")

    def get(
        self, table: dict[str, Any], field: str, key: str, kind: type, default: Any = ...
    ) -> Any:
        if key not in table:
            if default is not ...:
                return default
            raise self.fail(field, "missing")
        value = table[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(field, f"must be a whole number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {value!r}")
        if kind is list and not isinstance(value, list):
            raise self.fail(field, "must be a list of tables")
        return value

    def positive(self, key: str) -> int:
        value: int = self.get(self.data, key, key, int)
        if value <= 0:
            raise self.fail(key, f"must be positive, got {value}")
        return value

    def decimal(self, key: str, low: Decimal, high: Decimal) -> Decimal:
        raw = self.get(self.data, key, key, str)
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise self.fail(key, f"must be a decimal number in quotes, got {raw!r}") from None
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def time(self, field: str, text: Any) -> int:
        if not isinstance(text, str):
            raise self.fail(field, f'must be a time string like "01:47:00", got {text!r}')
        try:
            return parse_time_of_day(text)
        except ValueError as exc:
            raise self.fail(field, str(exc)) from None

    def points(self, key: str, value_key: str, unit: int, final: int) -> tuple[Point, ...]:
        rows = self.get(self.data, key, key, list)
        points = []
        for i, row in enumerate(rows):
            field = f"{key}[{i}]"
            if not isinstance(row, dict):
                raise self.fail(field, 'must be a table like { at = "00:02:05", ... }')
            at = self.time(f"{field}.at", row.get("at"))
            value = self.get(row, f"{field}.{value_key}", value_key, int) * unit
            points.append(Point(at, value, row.get("source")))
        for i, (a, b) in enumerate(itertools.pairwise(points)):
            if not (a.at_ms < b.at_ms and a.value < b.value):
                raise self.fail(f"{key}[{i + 1}]", "points must rise in both time and value")
        if points and not (
            points[0].at_ms > 0
            and points[-1].at_ms < DAY_MS
            and points[0].value > 0
            and points[-1].value < final
        ):
            raise self.fail(
                key,
                "points must lie strictly inside the day and below the final "
                "total (midnight and the final total are implied)",
            )
        return tuple(points)

    def weighted(self, key: str) -> tuple[Weighted, ...]:
        rows = self.get(self.data, key, key, list)
        if not rows:
            raise self.fail(key, "must list at least one entry")
        if len(rows) > 255:
            raise self.fail(key, f"at most 255 entries, got {len(rows)}")
        out = []
        for i, row in enumerate(rows):
            field = f"{key}[{i}]"
            name = self.get(row, f"{field}.name", "name", str)
            weight = self.get(row, f"{field}.weight", "weight", int)
            if weight < 0:
                raise self.fail(f"{field}.weight", f"must not be negative, got {weight}")
            out.append(Weighted(name, weight))
        return tuple(out)

    def milestones(self, final_gmv_fen: int, final_orders: int) -> tuple[MilestoneRule, ...]:
        rows = self.get(self.data, "milestones", "milestones", list)
        rules, seen = [], set()
        for i, row in enumerate(rows):
            field = f"milestones[{i}]"
            rule = MilestoneRule(
                id=self.get(row, f"{field}.id", "id", str),
                label=self.get(row, f"{field}.label", "label", str),
                metric=self.get(row, f"{field}.metric", "metric", str),
                threshold=self.get(row, f"{field}.threshold", "threshold", int),
                documented=self.get(row, f"{field}.documented", "documented", str, None),
            )
            if rule.metric not in ("gmv", "orders"):
                raise self.fail(f"{field}.metric", f"must be gmv or orders, got {rule.metric!r}")
            limit = final_gmv_fen // 100 if rule.metric == "gmv" else final_orders
            if not 0 < rule.threshold <= limit:
                raise self.fail(
                    f"{field}.threshold",
                    f"must be between 1 and the final total {limit:,}, got {rule.threshold:,}",
                )
            if rule.id in seen:
                raise self.fail(f"{field}.id", f"duplicate id {rule.id!r}")
            seen.add(rule.id)
            rules.append(rule)
        return tuple(rules)

    def profile(self) -> Profile:
        schema = self.data.get("schema")
        if schema != 1:
            raise self.fail("schema", f"must be 1 (this version reads schema 1), got {schema!r}")
        final_gmv_fen = self.positive("final_gmv_yuan") * 100
        final_orders = self.positive("final_orders")
        if final_gmv_fen < final_orders * 100:
            raise self.fail("final_gmv_yuan", "implies an average order below RMB 1")
        last_year_gmv_fen = self.positive("last_year_gmv_yuan") * 100
        countries = self.weighted("countries")
        if sum(c.weight for c in countries[1:]) <= 0:
            raise self.fail("countries", "needs a positive weight after the home market")
        return Profile(
            name=self.get(self.data, "name", "name", str),
            title=self.get(self.data, "title", "title", str),
            usd_rate=self.decimal("usd_rate", Decimal("0.01"), Decimal(1000)),
            final_gmv_fen=final_gmv_fen,
            final_orders=final_orders,
            last_year_gmv_fen=last_year_gmv_fen,
            peak_orders_per_s=self.positive("peak_orders_per_s"),
            international_share=self.decimal("international_share", Decimal(0), Decimal(1)),
            brands=self.positive("brands"),
            gmv_points=self.points("gmv", "yuan", 100, final_gmv_fen),
            order_points=self.points("orders", "count", 1, final_orders),
            milestones=self.milestones(final_gmv_fen, final_orders),
            categories=self.weighted("categories"),
            countries=countries,
            regions=self.weighted("regions"),
            path=self.path,
            last_year_points=self.points("last_year", "yuan", 100, last_year_gmv_fen)
            if "last_year" in self.data
            else (),
        )
