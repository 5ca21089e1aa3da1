"""Property-based fuzzing of what the server parses from strangers: resume positions,
client messages, the frames' mask bits, feed entries, and the log redaction."""

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker import feed
from ticker.guard import MaskCheck, redact

ids = st.integers(0, 2**64 - 1)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.text(max_size=60))
def test_any_text_is_a_position_or_a_bad_request(text: str) -> None:
    """position_key never raises anything but BadRequest, and never out of a stream id."""
    try:
        ms, seq, part = feed.position_key(text)
    except feed.BadRequest:
        return
    assert 0 <= ms < 2**64 and 0 <= seq < 2**64 and 0 <= part <= feed.WHOLE


@given(ids, ids, st.none() | st.integers(0, feed.WHOLE - 1))
def test_every_stream_id_and_part_is_a_position_in_order(
    ms: int, seq: int, part: int | None
) -> None:
    """Each valid id parses to its numbers; a part sorts before its whole entry."""
    text = f"{ms}-{seq}" + ("" if part is None else f".{part}")
    assert feed.position_key(text) == (ms, seq, feed.WHOLE if part is None else part)
    assert feed.position_key(text) <= feed.position_key(f"{ms}-{seq}")


@given(st.text(max_size=200) | json_values.map(lambda v: orjson.dumps(v).decode()))
def test_any_client_message_is_a_subscription_or_a_bad_request(raw: str) -> None:
    """parse_request takes any text: a valid subscription, or BadRequest saying why."""
    try:
        sub = feed.parse_request(raw)
    except feed.BadRequest as exc:
        assert str(exc)
        return
    assert "totals" in sub.topics and sub.topics <= feed.ALL_TOPICS
    assert 0 < sub.max_rate <= feed.MAX_RATE_HZ


@given(
    st.lists(
        st.builds(
            lambda t, r: {"type": "subscribe", "topics": t, "max_rate": r},
            st.lists(st.sampled_from(sorted(feed.TOPICS))),
            st.floats(0.01, 100),
        )
    ),
)
def test_valid_subscriptions_are_taken(messages: list[dict[str, object]]) -> None:
    """A well-formed subscribe is always accepted, whatever its topics and rate."""
    for m in messages:
        assert feed.parse_request(orjson.dumps(m).decode()).topics >= {"totals"}


def client_frame(payload: bytes, masked: bool = True) -> bytes:
    n = len(payload)
    size = (
        bytes([n])
        if n < 126
        else bytes([126]) + n.to_bytes(2, "big")
        if n < 65536
        else bytes([127]) + n.to_bytes(8, "big")
    )
    first = bytes([0x81, (0x80 if masked else 0) | size[0]]) + size[1:]
    return first + (b"abcd" if masked else b"") + payload


@given(st.lists(st.binary(max_size=70_000), min_size=1, max_size=4), st.data())
def test_masked_frames_pass_in_any_chunks(payloads: list[bytes], data: st.DataObject) -> None:
    """However the stream is cut, masked frames pass the mask check."""
    stream = b"".join(client_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    check = MaskCheck()
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        assert check.feed(stream[a:b])


@given(st.lists(st.binary(max_size=300), max_size=3), st.binary(max_size=300), st.data())
def test_an_unmasked_frame_is_found_in_any_chunks(
    before: list[bytes], bad: bytes, data: st.DataObject
) -> None:
    """An unmasked frame after any masked ones is caught, however the stream is cut."""
    stream = b"".join(client_frame(p) for p in before) + client_frame(bad, masked=False)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    check = MaskCheck()
    results = [
        check.feed(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)
    ]
    assert False in results


@given(
    st.dictionaries(st.binary(max_size=4), st.binary(max_size=40), max_size=3)
    | json_values.map(lambda v: {b"u": orjson.dumps(v)})
)
def test_any_feed_entry_is_a_state_or_a_bad_entry(fields: dict[bytes, bytes]) -> None:
    """parse_entry never raises anything but BadFeedEntry."""
    try:
        state, fired = feed.parse_entry(fields)
    except feed.BadFeedEntry:
        return
    assert isinstance(state, dict) and isinstance(fired, list)


@given(
    st.text(max_size=40),
    st.text(
        alphabet=st.characters(blacklist_characters='&;# "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0'),
        min_size=1,
        max_size=20,
    ),
)
def test_redaction_leaves_no_token_value(prefix: str, token: str) -> None:
    """Whatever surrounds it, a `token=` query value never survives redaction."""
    line = f"GET /{prefix}?a=1&token={token}&b=2 HTTP/1.1"
    assert f"token={token}&" not in redact(line) or token == "[redacted]"


@pytest.mark.parametrize("position", ["①-0", "²-0", "1-٣", "0x1-0", "-1-0", "1--0", " 1-0"])
def test_lookalike_digits_are_not_positions(position: str) -> None:
    """Unicode digits and signs are refused (int() would take some of them)."""
    with pytest.raises(feed.BadRequest):
        feed.position_key(position)
