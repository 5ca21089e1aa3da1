"""Control stream entries are checked by one function: each parses or is refused, saying why."""

import contextlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticker.core.control import (
    BadCommand,
    Seek,
    Speed,
    decode_command,
    encode_command,
    parse_command,
)


@pytest.mark.parametrize(
    "body",
    [
        {"action": "pause"},
        {"action": "resume"},
        {"action": "speed", "speed": 600},
        {"action": "speed", "speed": "max"},
        {"action": "seek", "to": "01:40"},
    ],
)
def test_what_parse_command_makes_decodes_back_unchanged(body: dict[str, object]) -> None:
    """A command as `ticker control` and the server write it is read back as it was."""
    command = parse_command(body)
    assert decode_command({b"c": encode_command(command)}) == command


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({b"c": b"not json"}, "not JSON"),
        ({b"c": b"[1]"}, "not a JSON object"),
        ({b"x": b"{}"}, "no field 'c'"),
        ({b"c": b'{"action": "seek"}'}, "to_ms"),
        ({b"c": b'{"action": "seek", "to_ms": 86400001}'}, "to_ms"),
        ({b"c": b'{"action": "seek", "to_ms": true}'}, "to_ms"),
        ({b"c": b'{"action": "speed", "speed": "fast"}'}, "speed must be"),
        ({b"c": b'{"action": "speed"}'}, "speed must be"),
        ({b"c": b'{"action": "speed", "speed": 0}'}, "speed must be"),
        ({b"c": b'{"action": "rewind"}'}, "action must be"),
        ({b"c": b"\xff\xfe"}, "not JSON"),
        ({b"c": b" " * 2_000}, "bytes"),
    ],
)
def test_a_malformed_entry_is_refused_saying_what_is_wrong(
    fields: dict[bytes, bytes], says: str
) -> None:
    """Each malformed entry raises BadCommand naming the problem."""
    with pytest.raises(BadCommand, match=says):
        decode_command(fields)


# The machine is shared: generation may be slow, which says nothing about the code.
settings.register_profile("control", deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
COMMANDS = st.fixed_dictionaries(
    {"action": st.sampled_from(["pause", "resume", "speed", "seek", "x"])},
    optional={"speed": SCALARS, "to_ms": SCALARS, "to": SCALARS},
)


@settings(settings.get_profile("control"))
@given(st.dictionaries(st.binary(max_size=8), st.binary(max_size=64), max_size=3))
def test_any_bytes_parse_or_raise_bad_command(fields: dict[bytes, bytes]) -> None:
    """Arbitrary entry fields either decode or raise BadCommand, nothing else."""
    with contextlib.suppress(BadCommand):
        decode_command(fields)


@settings(settings.get_profile("control"))
@given(COMMANDS)
def test_any_command_shaped_json_parses_to_a_valid_command_or_raises(
    command: dict[str, object],
) -> None:
    """Command-shaped JSON decodes to a well-typed command, or raises BadCommand."""
    try:
        out = decode_command({b"c": orjson.dumps(command)})
    except BadCommand:
        return
    assert out.wire()["action"] == command["action"]
    if isinstance(out, Seek):
        assert type(out.to_ms) is int and 0 <= out.to_ms <= 86_400_000
    if isinstance(out, Speed):
        assert out.speed is None or 0 < out.speed <= 1e6


@settings(settings.get_profile("control"))
@given(JSON)
def test_any_request_body_parses_or_raises_bad_command(body: object) -> None:
    """parse_command takes any JSON body: a command or BadCommand."""
    with contextlib.suppress(BadCommand):
        parse_command(body)
