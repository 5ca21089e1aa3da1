"""Profiles are validated at the boundary: every number and size bounded, each refusal
naming the field and the problem, never a traceback (fuzzed)."""

import contextlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.profile import PROFILE_DIR, load, loads, parse
from ticker.errors import ProfileError

SEED = (PROFILE_DIR / "2018.toml").read_text(encoding="utf-8")
SEED_DATA = tomllib.loads(SEED)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)


def replaced(line: str, new: str) -> str:
    """The 2018 profile with its line starting `line = ` replaced by `new`."""
    text, count = re.subn(rf"^{line} = .*$", new, SEED, count=1, flags=re.M)
    assert count == 1
    return text


@pytest.mark.parametrize(
    ("line", "new", "says"),
    [
        ("final_gmv_yuan", "final_gmv_yuan = 9223372036854775807", "final_gmv_yuan: must be 1 up"),
        ("final_orders", "final_orders = 9_000_000_000_000", "final_orders: must be 1 up to"),
        ("final_orders", "final_orders = 99999999999999999999", "does not fit in 64 bits"),
        ("final_orders", "final_orders = 1_000", "implies an average order above"),
        ("peak_orders_per_s", "peak_orders_per_s = 10_000_000_000", "peak_orders_per_s: must be"),
        ("name", f'name = "{"x" * 70}"', "name: at most 36 characters, got 70"),
        ("name", 'name = "my day"', "name: letters, digits"),
        ("title", f'title = "{"t" * 300}"', "title: at most 200 characters"),
        ("usd_rate", 'usd_rate = "NaN"', "usd_rate: must be a decimal number"),
        ("brands", "brands = 99_000_000", "brands: must be 1 up to 16,777,216"),
    ],
)  # fmt: skip
def test_out_of_bounds_fields_are_refused_naming_them(line: str, new: str, says: str) -> None:
    """Each number or size out of its bounds raises ProfileError naming field and problem."""
    with pytest.raises(ProfileError, match=re.escape(says)):
        loads(replaced(line, new).encode(), Path("bad.toml"))


def test_a_deeply_nested_array_is_refused_not_a_crash() -> None:
    """A 20,000-deep array is a ProfileError, not a RecursionError."""
    raw = SEED + "\nextra = " + "[" * 20_000 + "]" * 20_000 + "\n"
    with pytest.raises(ProfileError, match="nested too deep"):
        loads(raw.encode(), Path("deep.toml"))


def ticker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticker", *args, "--redis-url", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "new", ["final_gmv_yuan = 9223372036854775807", "extra = " + "[" * 20_000 + "]" * 20_000]
)
def test_the_cli_refuses_a_bad_profile_in_one_line(tmp_path: Path, new: str) -> None:
    """`ticker replay --profile bad.toml`: exit 2, one line, no traceback."""
    path = tmp_path / "bad.toml"
    text = replaced("final_gmv_yuan", new) if new.startswith("final") else SEED + "\n" + new
    path.write_text(text, encoding="utf-8")
    result = ticker("replay", "--profile", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("run", "says"),
    [("r" * 65, "at most 58 characters"), ("a b", "letters, digits"), ("", "letters, digits")],
)
def test_a_run_id_the_stream_would_refuse_is_refused_up_front(run: str, says: str) -> None:
    """--run longer than the stream takes, or with odd characters: exit 2 before Redis."""
    result = ticker("replay", "--scale", "0.001", "--run", run)
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_bundled_profiles_are_within_every_bound() -> None:
    """2017, 2018 and 2019 load as before."""
    assert {load(name).name for name in ("2017", "2018", "2019")} == {"2017", "2018", "2019"}


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_bytes_load_or_raise_profile_error(raw: bytes) -> None:
    """Arbitrary bytes are a profile or a ProfileError, nothing else."""
    with contextlib.suppress(ProfileError):
        loads(raw, Path("fuzz.toml"))


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(st.sampled_from(sorted(SEED_DATA)), VALUES)
def test_any_value_in_any_field_loads_or_raises_profile_error(field: str, value: Any) -> None:
    """The 2018 profile with one field set to anything: a profile or a ProfileError."""
    try:
        parse({**SEED_DATA, field: value}, Path("fuzz.toml"))
    except ProfileError as exc:
        assert str(exc).startswith("fuzz.toml: ")


@FUZZ
@given(st.sampled_from(["gmv", "orders", "milestones", "categories", "regions"]), st.data())
def test_any_value_inside_a_row_loads_or_raises_profile_error(key: str, data: Any) -> None:
    """One key of one row of a list set to anything: a profile or a ProfileError."""
    rows = [dict(r) for r in SEED_DATA[key]]
    i = data.draw(st.integers(0, len(rows) - 1))
    rows[i][data.draw(st.sampled_from([*sorted(rows[i]), "source", "x"]))] = data.draw(VALUES)
    with contextlib.suppress(ProfileError):
        parse({**SEED_DATA, key: rows}, Path("fuzz.toml"))
