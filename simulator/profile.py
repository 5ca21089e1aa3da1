"""Festival profiles: TOML files of documented figures, validated on load.

A bad file raises ProfileError naming the field and what is wrong with it.
"""

import itertools
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ticker.core.batch import MAX_BRANDS
from ticker.core.clock import DAY_MS, parse_time_of_day
from ticker.errors import ProfileError

PROFILE_DIR = Path(__file__).parent / "profiles"

# Bounds on every number and size, so that a profile cannot overflow the int64 columns and
# counters, the float curves (exact below 2**53) or memory, nor make entries the stream
# refuses. Each is far beyond any real festival (2018: RMB 213.5bn, 1.042bn orders).
MAX_FILE_BYTES = 4_000_000
MAX_GMV_YUAN = 10**12  # RMB 1 trillion: 10**14 fen, exact in a float64 curve
MAX_ORDERS = 10**10
MAX_AVERAGE_ORDER_YUAN = 10_000  # one order's value stays far below MAX_ORDER_FEN
MAX_PEAK_ORDERS_PER_S = 10**8
MAX_WEIGHT = 10**12
MAX_POINTS = 10_000  # per curve
MAX_MILESTONES = 1_000
MAX_NAMED_BRANDS = 1_000
MAX_TEXT = 200  # titles, labels, names of categories, countries, regions and brands
MAX_SOURCE = 2_000  # a point's `source`
MAX_DECIMAL = 32  # characters of a quoted decimal
# A run id is `<name>-<UTC time>-<4 hex>` (22 characters after the name), and a seek adds
# `~<second of the day>` (up to 6): the stream accepts 64 (ticker.core.batch).
MAX_NAME = 64 - 22 - 6
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KNOWN_FIELDS = frozenset(
    {
        "schema",
        "name",
        "title",
        "usd_rate",
        "final_gmv_yuan",
        "final_orders",
        "last_year_gmv_yuan",
        "peak_orders_per_s",
        "international_share",
        "brands",
        "brands_over_100m",
        "named_brands",
        "last_year",
        "gmv",
        "orders",
        "milestones",
        "categories",
        "countries",
        "regions",
        "home_regions",
    }
)


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
    home_regions: int = 0  # the first this many regions are the home market's
    brands_over_100m: int = 0  # brands whose GMV ends above RMB 100m (scaled with the day)
    named_brands: tuple[str, ...] = ()  # names of the leading brands, largest first

    @property
    def regions_abroad(self) -> int:
        return len(self.regions) - self.home_regions


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
    """The profile of a bundled name or a file; raises ProfileError saying what is wrong."""
    path = resolve(name_or_path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ProfileError(f"{path}: {size:,} bytes; a profile is at most {MAX_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read it: {exc.strerror}") from None
    return loads(raw, path)


def loads(raw: bytes, path: Path) -> Profile:
    """The profile in `raw` (the bytes of the file at `path`, named in messages); raises
    ProfileError, and nothing else, whatever the bytes."""
    if len(raw) > MAX_FILE_BYTES:
        raise ProfileError(f"{path}: {len(raw):,} bytes; a profile is at most {MAX_FILE_BYTES:,}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ProfileError(f"{path}: not valid TOML: arrays or tables nested too deep") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: Path) -> Profile:
    """The profile in a parsed TOML document; raises ProfileError naming the field."""
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
            raise self.fail(field, f"must be a whole number, got {_short(value)}")
        if kind is int and abs(value) > 2**63 - 1:
            raise self.fail(field, f"{value} does not fit in 64 bits")
        if kind is str and not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {_short(value)}")
        if kind is list and not isinstance(value, list):
            raise self.fail(field, "must be a list of tables")
        if kind is bool and not isinstance(value, bool):
            raise self.fail(field, f"must be true or false, got {value!r}")
        return value

    def text(self, table: dict[str, Any], field: str, key: str, limit: int = MAX_TEXT) -> str:
        value: str = self.get(table, field, key, str)
        if len(value) > limit:
            raise self.fail(field, f"at most {limit} characters, got {len(value):,}")
        return value

    def bounded(self, key: str, high: int, default: Any = ...) -> int:
        """A whole number 1..high (or the default when absent)."""
        value: int = self.get(self.data, key, key, int, default)
        if value is not default and not 0 < value <= high:
            raise self.fail(key, f"must be 1 up to {high:,}, got {value:,}")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        rows = self.get(self.data, key, key, list, [])
        if len(rows) > MAX_NAMED_BRANDS:
            raise self.fail(key, f"at most {MAX_NAMED_BRANDS:,} names, got {len(rows):,}")
        for i, name in enumerate(rows):
            if not isinstance(name, str) or not name or len(name) > MAX_TEXT:
                raise self.fail(
                    f"{key}[{i}]",
                    f"must be a string of 1 to {MAX_TEXT} characters, got {_short(name)}",
                )
        if len(set(rows)) != len(rows):
            raise self.fail(key, "names must be distinct")
        return tuple(rows)

    def brand_tiers(self, brands: int, final_gmv_fen: int) -> tuple[int, tuple[str, ...]]:
        over: int = self.get(self.data, "brands_over_100m", "brands_over_100m", int, 0)
        if not 0 <= over < brands:
            raise self.fail(
                "brands_over_100m", f"must be 0 up to brands - 1 ({brands - 1:,}), got {over:,}"
            )
        named = self.names("named_brands")
        if over and len(named) > over:
            raise self.fail(
                "named_brands", f"lists {len(named)} names but only {over} brands pass RMB 100m"
            )
        # The brand generator gives each brand over the line at least 2.5 times RMB 100m
        # and keeps the others below a quarter of it (see simulator/brands.py).
        if over * 250_000_000 * 100 > final_gmv_fen * 6 // 10:
            raise self.fail(
                "brands_over_100m",
                f"{over} brands of at least RMB 250m each would take more than 60% of the day",
            )
        return over, named

    def decimal(self, key: str, low: Decimal, high: Decimal) -> Decimal:
        raw = self.get(self.data, key, key, str)
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal("NaN")
        if len(raw) > MAX_DECIMAL or not value.is_finite():
            raise self.fail(key, f"must be a decimal number in quotes, got {_short(raw)}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def time(self, field: str, text: Any) -> int:
        if not isinstance(text, str) or len(text) > 20:
            raise self.fail(field, f'must be a time string like "01:47:00", got {_short(text)}')
        try:
            return parse_time_of_day(text)
        except ValueError as exc:
            raise self.fail(field, str(exc)) from None

    def points(self, key: str, value_key: str, unit: int, final: int) -> tuple[Point, ...]:
        rows = self.get(self.data, key, key, list)
        if len(rows) > MAX_POINTS:
            raise self.fail(key, f"at most {MAX_POINTS:,} points, got {len(rows):,}")
        points = []
        for i, row in enumerate(rows):
            field = f"{key}[{i}]"
            if not isinstance(row, dict):
                raise self.fail(field, 'must be a table like { at = "00:02:05", ... }')
            at = self.time(f"{field}.at", row.get("at"))
            value = self.get(row, f"{field}.{value_key}", value_key, int) * unit
            source = None
            if "source" in row:
                source = self.text(row, f"{field}.source", "source", MAX_SOURCE)
            points.append(Point(at, value, source))
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

    def weighted(self, key: str, limit: int = 255) -> tuple[Weighted, ...]:
        rows = self.get(self.data, key, key, list)
        if not rows:
            raise self.fail(key, "must list at least one entry")
        if len(rows) > limit:
            raise self.fail(key, f"at most {limit} entries, got {len(rows)}")
        out = []
        for i, row in enumerate(rows):
            field = f"{key}[{i}]"
            if not isinstance(row, dict):
                raise self.fail(field, 'must be a table like { name = "...", weight = 10 }')
            name = self.text(row, f"{field}.name", "name")
            weight = self.get(row, f"{field}.weight", "weight", int)
            if not 0 <= weight <= MAX_WEIGHT:
                raise self.fail(f"{field}.weight", f"must be 0 up to {MAX_WEIGHT:,}, got {weight}")
            out.append(Weighted(name, weight))
        return tuple(out)

    def milestones(self, final_gmv_fen: int, final_orders: int) -> tuple[MilestoneRule, ...]:
        rows = self.get(self.data, "milestones", "milestones", list)
        if len(rows) > MAX_MILESTONES:
            raise self.fail("milestones", f"at most {MAX_MILESTONES:,}, got {len(rows):,}")
        rules, seen = [], set()
        for i, row in enumerate(rows):
            field = f"milestones[{i}]"
            if not isinstance(row, dict):
                raise self.fail(field, "must be a table with id, label, metric, threshold")
            documented = None
            if "documented" in row:
                documented = self.text(row, f"{field}.documented", "documented")
            rule = MilestoneRule(
                id=self.text(row, f"{field}.id", "id", 64),
                label=self.text(row, f"{field}.label", "label"),
                metric=self.get(row, f"{field}.metric", "metric", str),
                threshold=self.get(row, f"{field}.threshold", "threshold", int),
                documented=documented,
            )
            if rule.metric not in ("gmv", "orders"):
                raise self.fail(
                    f"{field}.metric", f"must be gmv or orders, got {_short(rule.metric)}"
                )
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
            raise self.fail(
                "schema", f"must be 1 (this version reads schema 1), got {_short(schema)}"
            )
        unknown = sorted(set(self.data) - KNOWN_FIELDS)
        if unknown:
            raise self.fail(unknown[0][:60], "unknown field (a typo?); see docs/profiles.md")
        name = self.text(self.data, "name", "name", MAX_NAME)
        if not NAME.match(name):
            raise self.fail(
                "name",
                f"letters, digits, '.', '_' and '-' only (run ids start with it), got "
                f"{_short(name)}",
            )
        final_gmv_fen = self.bounded("final_gmv_yuan", MAX_GMV_YUAN) * 100
        final_orders = self.bounded("final_orders", MAX_ORDERS)
        if final_gmv_fen < final_orders * 100:
            raise self.fail("final_gmv_yuan", "implies an average order below RMB 1")
        if final_gmv_fen > final_orders * MAX_AVERAGE_ORDER_YUAN * 100:
            raise self.fail(
                "final_gmv_yuan", f"implies an average order above RMB {MAX_AVERAGE_ORDER_YUAN:,}"
            )
        last_year_gmv_fen = self.bounded("last_year_gmv_yuan", MAX_GMV_YUAN) * 100
        countries = self.weighted("countries")
        if sum(c.weight for c in countries[1:]) <= 0:
            raise self.fail("countries", "needs a positive weight after the home market")
        categories = self.weighted("categories")
        regions = self.weighted("regions", 65_535)
        for key, rows in (("categories", categories), ("regions", regions)):
            if sum(r.weight for r in rows) <= 0:
                raise self.fail(key, "needs at least one positive weight")
        home_regions: int = self.get(self.data, "home_regions", "home_regions", int, len(regions))
        if not 0 <= home_regions <= len(regions):
            raise self.fail(
                "home_regions", f"must be 0 up to the {len(regions)} regions, got {home_regions}"
            )
        brands = self.bounded("brands", MAX_BRANDS)
        over, named = self.brand_tiers(brands, final_gmv_fen)
        return Profile(
            name=name,
            title=self.text(self.data, "title", "title"),
            usd_rate=self.decimal("usd_rate", Decimal("0.01"), Decimal(1000)),
            final_gmv_fen=final_gmv_fen,
            final_orders=final_orders,
            last_year_gmv_fen=last_year_gmv_fen,
            peak_orders_per_s=self.bounded("peak_orders_per_s", MAX_PEAK_ORDERS_PER_S),
            international_share=self.decimal("international_share", Decimal(0), Decimal(1)),
            brands=brands,
            gmv_points=self.points("gmv", "yuan", 100, final_gmv_fen),
            order_points=self.points("orders", "count", 1, final_orders),
            milestones=self.milestones(final_gmv_fen, final_orders),
            categories=categories,
            countries=countries,
            regions=regions,
            path=self.path,
            last_year_points=self.points("last_year", "yuan", 100, last_year_gmv_fen)
            if "last_year" in self.data
            else (),
            home_regions=home_regions,
            brands_over_100m=over,
            named_brands=named,
        )


def _short(value: Any) -> str:
    """A value as it may appear in a message: its repr, cut short."""
    try:
        text = repr(value)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= 60 else f"{text[:57]}..."
