"""Profiles: the bundled ones keep to the facts; bad files fail naming the field."""

import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import orjson
import pytest

from simulator import brands
from simulator.curve import Curve
from simulator.profile import PROFILE_DIR, Profile, load
from ticker.core.aggregate import State
from ticker.core.batch import BadEntry, ReplayMeta
from ticker.core.clock import DAY_MS, parse_time_of_day
from ticker.errors import ProfileError

BUNDLED = ("2017", "2018", "2019")
LAZADA = ("Singapore", "Malaysia", "Thailand", "Indonesia", "Philippines", "Vietnam")
TOP_PROVINCES = (
    "Guangdong", "Beijing", "Jiangsu", "Shandong", "Sichuan", "Henan", "Hubei", "Fujian",
)  # fmt: skip
SEED_TEXT = (PROFILE_DIR / "2018.toml").read_text(encoding="utf-8")


def orders_curve(p: Profile) -> Curve:
    return Curve([(q.at_ms, q.value) for q in p.order_points], p.final_orders, Fraction(1))


@pytest.mark.parametrize("name", BUNDLED)
def test_order_rate_peaks_at_the_documented_peak_within_30_s(name: str) -> None:
    """The orders curve's largest 1-s step is the profile's peak (±0.1%), within 30 s."""
    p = load(name)
    steps = np.diff(orders_curve(p).unscaled(np.arange(0, DAY_MS + 1, 1000)))
    assert abs(int(steps.max()) - p.peak_orders_per_s) <= p.peak_orders_per_s // 1000
    assert int(steps.argmax()) < 30


def test_2018_passes_1bn_orders_at_23_18_and_ends_exact() -> None:
    """2018's orders curve passes 1bn at 23:18 (±1 min) and ends at 1,042,000,000."""
    p = load("2018")
    curve = orders_curve(p)
    t = np.arange(parse_time_of_day("23:00"), DAY_MS + 1, 1000)
    values = curve.unscaled(t)
    crossing = int(t[np.argmax(values >= 1_000_000_000)])
    assert abs(crossing - parse_time_of_day("23:18")) <= 60_000
    assert int(values[-1]) == 1_042_000_000 == p.final_orders


@pytest.mark.parametrize(
    ("name", "gmv_fen", "orders"),
    [("2017", 16_820_000_000_000, 812_000_000), ("2019", 26_844_405_838_100, 1_292_000_000)],
)
def test_other_years_carry_their_published_totals(name: str, gmv_fen: int, orders: int) -> None:
    """2017 and 2019 end at their published GMV (2019's to the yuan) and order counts."""
    p = load(name)
    assert (p.final_gmv_fen, p.final_orders) == (gmv_fen, orders)


@pytest.mark.parametrize("name", BUNDLED)
def test_regions_are_the_provinces_then_230_abroad_with_lazadas_markets(name: str) -> None:
    """Buyers: China's 31 provinces in TechNode's order, then exactly 230 regions abroad."""
    p = load(name)
    home, abroad = p.regions[: p.home_regions], p.regions[p.home_regions :]
    assert p.home_regions == 31 and len(abroad) == p.regions_abroad == 230
    assert len({r.name for r in p.regions}) == len(p.regions)
    by_weight = sorted(home, key=lambda r: -r.weight)
    assert tuple(r.name for r in by_weight[:8]) == TOP_PROVINCES
    assert set(LAZADA) <= {r.name for r in abroad}
    assert all(r.weight > 0 for r in abroad)


def test_brand_shares_put_exactly_237_brands_far_above_the_line_at_full_scale() -> None:
    """2018's brand shares: 237 brands expect >= 2.5x RMB 100m, all others <= 0.25x."""
    p = load("2018")
    expected = brands.shares(p.brands, p.brands_over_100m, p.final_gmv_fen) * p.final_gmv_fen
    line = brands.LINE_FEN
    assert len(expected) == p.brands == 180_000
    # (within a few ulps: the 238th brand sits on the ceiling, and summation order differs
    # between numpy versions)
    assert np.all(expected[:237] >= 2.5 * line)
    assert np.all(expected[237:] <= 0.25 * line * (1 + 1e-12))
    assert p.named_brands == (
        "Apple", "Dyson", "Kindle", "Estée Lauder", "L'Oréal", "Nestlé", "Gap", "Nike", "Adidas",
    )  # fmt: skip


def test_meta_without_brand_fields_still_loads() -> None:
    """A start entry from before brand tallies (no brand_names/brand_line_fen) decodes."""
    from simulator.generator import DayPlan

    meta = orjson.loads(DayPlan(load("2018"), Fraction(1, 1000), 0, 60_000).meta().to_json())
    del meta["brand_names"], meta["brand_line_fen"]
    decoded = ReplayMeta.from_json(orjson.dumps(meta))
    assert decoded.brand_names == () and decoded.brand_line_fen == 0
    meta["brands"] = 10**9
    with pytest.raises(BadEntry, match="brands"):
        ReplayMeta.from_json(orjson.dumps(meta))


def test_brand_tally_survives_dumps_and_loads() -> None:
    """The per-brand tally is persisted exactly, narrow or wide, and old states load."""
    from simulator.generator import DayPlan
    from ticker.core.batch import Start

    state = State()
    state.apply(Start("r", 0, DayPlan(load("2018"), Fraction(1, 1000), 0, 60_000).meta()))
    state.brand_gmv[:3] = [5, 2**40, 7]
    wide = State.loads(state.dumps(), state.brand_blob())
    assert np.array_equal(wide.brand_gmv, state.brand_gmv)
    state.brand_gmv[1] = 9
    narrow = state.brand_blob()
    assert narrow[0] == 4 and len(narrow) == 1 + 4 * 180_000
    assert np.array_equal(State.loads(state.dumps(), narrow).brand_gmv, state.brand_gmv)
    assert len(State.loads(state.dumps()).brand_gmv) == 180_000


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("final_orders = 1_042_000_000", "", "final_orders: missing"),
        ("final_orders = 1_042_000_000", 'final_orders = "many"', "final_orders: must be a whole"),
        ('usd_rate = "6.931"', "usd_rate = 6.931", "usd_rate: must be a string"),
        ('{ at = "00:01:25", yuan = 6_931', '{ at = "00:00:10", yuan = 6_931', "gmv[1]: points"),
        ('metric = "orders", threshold = 1_000_000_000', 'metric = "visits", threshold = 1',
         "milestones[7].metric"),
        ('{ at = "00:00:20", yuan = 1_000', '{ at = "25:00", yuan = 1_000', "gmv[0].at"),
        ('{ at = "00:00:20", yuan = 1_000', '{ at = "00:61", yuan = 1_000', "gmv[0].at"),
        ("brands = 180_000", "brands = 180_000\nbrand = 1", "brand: unknown field"),
        ("brands_over_100m = 237", "brands_over_100m = 3", "named_brands: lists 9 names"),
        ('{ name = "Tibet", weight = 20 }', '{ name = "Tibet", weight = -1 }',
         "regions[30].weight"),
        ("home_regions = 31", "home_regions = 999", "home_regions: must be"),
    ],
)  # fmt: skip
def test_bad_profile_names_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    """A profile with a missing, mistyped or out-of-rule field fails naming that field."""
    assert old in SEED_TEXT
    with pytest.raises(ProfileError, match=re.escape(f"bad.toml: {field}")):
        load(str(write(tmp_path, SEED_TEXT.replace(old, new, 1))))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticker", "profile", "check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_profile_check_cli_passes_the_seed_year() -> None:
    """`ticker profile check 2018` exits 0 and ends with `N/N points within tolerance`."""
    done = run_cli("2018")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"(\d+)/(\d+) points within tolerance", last)
    assert match and match[1] == match[2] == "27"


def test_profile_check_cli_rejects_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    """A bad profile file makes `ticker profile check` exit 2 with a one-line message."""
    path = write(tmp_path, SEED_TEXT.replace('"00:02:05", yuan', '"25:00", yuan', 1))
    done = run_cli(str(path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "gmv[2].at" in done.stderr


def test_tolerance_is_five_seconds_early_then_one_percent_of_the_time() -> None:
    """Points up to 00:05 allow ±5 s; later ones ±1% of their time since midnight."""
    from ticker.profile_check import tolerance_ms

    assert tolerance_ms(parse_time_of_day("00:04:20")) == 5_000
    assert tolerance_ms(parse_time_of_day("01:00:00")) == 36_000
    assert tolerance_ms(parse_time_of_day("23:18:00")) == 838_800
