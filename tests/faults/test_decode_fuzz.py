"""Property-based fuzzing of the entry decoder: whatever the fields, an entry decodes or
raises BadEntry (a dead letter with a reason), never anything else."""

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.test_aggregate import ENTRIES
from ticker.core.aggregate import State
from ticker.core.batch import BadEntry, Start, decode

NAMES = sorted({k for fields in ENTRIES[:2] + ENTRIES[-1:] for k in fields} | {b"shard"})
VALID = [ENTRIES[0], ENTRIES[1], ENTRIES[-1]]

numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
    st.sampled_from([b"", b" 1", b"1_0", b"0x10", b"1e3", b"\xd9\xa1", b"9" * 5000, b"nan"]),
)
values = st.one_of(st.binary(max_size=64), numbers)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Lists of points (the shape of `history` and `last_year_points`) with numbers of any size.
points = st.lists(
    st.lists(
        st.integers(-(2**66), 2**66)
        | st.floats(-1e300, 1e300)
        | st.sampled_from([2.0**64, 1e300, -1e300, 2**63, -(2**63) - 1]),
        min_size=2,
        max_size=3,
    ),
    max_size=3,
)
META_KEYS = list(orjson.loads(ENTRIES[0][b"meta"]))


@st.composite
def mutated_meta(draw: Any) -> bytes:
    """A valid start entry's meta with some fields replaced by any JSON, or removed."""
    meta = orjson.loads(ENTRIES[0][b"meta"])
    for key in draw(st.lists(st.sampled_from(META_KEYS), max_size=4)):
        if draw(st.booleans()):
            meta[key] = draw(json_values | points)
        else:
            meta.pop(key, None)
    return json.dumps(meta).encode()  # (orjson refuses integers beyond 64 bits)


@st.composite
def fields(draw: Any) -> dict[bytes, bytes]:
    """A valid entry with fields replaced, removed or added; or fields made up whole."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.dictionaries(st.sampled_from(NAMES) | st.binary(max_size=8), values))
    out = dict(draw(st.sampled_from(VALID)))
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=4)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            out.pop(name, None)
        elif choice == 1 and name == b"meta":
            out[name] = draw(mutated_meta())
        else:
            out[name] = draw(values)
    return out


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields())
def test_any_fields_decode_or_raise_bad_entry(entry: dict[bytes, bytes]) -> None:
    """decode() returns an entry or raises BadEntry, for any fields at all; a start entry
    it accepts can be applied, viewed and saved (no crash later, at commit)."""
    try:
        decoded = decode(entry)
    except BadEntry as exc:
        assert str(exc)
        return
    if isinstance(decoded, Start):
        state = State()
        state.apply(decoded)
        orjson.dumps(state.view())
        State.loads(state.dumps(), state.brand_blob())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_meta())
def test_any_start_meta_decodes_to_a_state_that_saves_or_is_a_bad_entry(meta: bytes) -> None:
    """A start entry with any meta is refused with a reason, or applies, shows and saves."""
    try:
        start = decode(ENTRIES[0] | {b"meta": meta})
    except BadEntry:
        return
    state = State()
    state.apply(start)
    orjson.dumps(state.view())
    State.loads(state.dumps(), state.brand_blob())
