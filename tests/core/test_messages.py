"""The feed's messages as `ticker.core.messages` declares them agree with docs/feed.schema.json
and docs/asyncapi.yaml, and each one makes the round trip through its JSON text."""

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ticker.core import messages
from ticker.core.messages import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Error,
    Hello,
    Milestone,
    Replay,
    Snapshot,
    Subscribe,
    Tick,
)
from ticker.feed import EMPTY_STATE

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "feed.schema.json").read_text())
API = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())


def definition(kind: str) -> dict[str, Any]:
    """The schema's definition of the server message of type `kind`."""
    (found,) = (
        d
        for d in SCHEMA["$defs"].values()
        if d.get("properties", {}).get("type") == {"const": kind}
    )
    return found


def shape(cls: type[Any]) -> tuple[set[str], set[str]]:
    """A declaration's (properties, required properties) on the wire."""
    names = {"type"} | {f.name for f in fields(cls)}
    return names, names - {f.name for f in fields(cls) if f.metadata.get("omit_none")}


def test_the_schema_offers_exactly_the_declared_server_messages() -> None:
    """The schema's oneOf lists one definition per declared server message, no other."""
    offered = [SCHEMA["$defs"][ref["$ref"].rpartition("/")[2]] for ref in SCHEMA["oneOf"]]
    assert sorted(d["properties"]["type"]["const"] for d in offered) == sorted(SERVER_MESSAGES)


@pytest.mark.parametrize("kind", sorted(SERVER_MESSAGES))
def test_each_server_message_has_the_schemas_fields(kind: str) -> None:
    """Properties and required properties are the declaration's fields (and `type`)."""
    d = definition(kind)
    assert shape(SERVER_MESSAGES[kind]) == (set(d["properties"]), set(d["required"]))


def test_the_subscribe_message_has_the_asyncapi_documents_fields() -> None:
    """The client's one message, as docs/asyncapi.yaml describes its payload."""
    payload = API["components"]["messages"]["subscribe"]["payload"]
    assert payload["properties"]["type"] == {"const": "subscribe"} and list(CLIENT_MESSAGES) == [
        "subscribe"
    ]
    assert shape(Subscribe) == (set(payload["properties"]), set(payload["required"]))


def test_the_protocol_and_error_codes_are_the_schemas() -> None:
    """hello's protocol and error's codes are declared once, as the schema says."""
    assert definition("hello")["properties"]["protocol"] == {"const": messages.PROTOCOL}
    assert definition("error")["properties"]["code"]["enum"] == list(messages.ERROR_CODES)


MILESTONE = {
    "id": "m",
    "label": "RMB 1bn",
    "metric": "gmv_fen",
    "threshold": 1,
    "documented": None,
    "sim_time_ms": 0,
    "sim_time": "00:00:00.000",
}
EXAMPLES = [
    Hello(1, "e", "ticker 1", ["totals"], 10.0),
    Snapshot("1-0", "e", {}),
    Snapshot("1-0", "e", {}, recovered=True),
    Tick("2-0", {"gmv_fen": 1}),
    Milestone("2-0.0", MILESTONE),
    Replay(None),
    Error("bad_request", "no"),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_each_message_decodes_back_to_itself_with_type_and_position_first(message: Any) -> None:
    """decode(encode(m)) == m; the text starts with its type, then its position if any."""
    text = message.encode()
    assert messages.decode(text) == message
    assert text.startswith(b'{"type":"%s"' % message.TYPE.encode())
    assert text.split(b",")[1].startswith(b'"position":') is hasattr(message, "position")


def test_a_message_missing_a_field_or_of_no_known_type_is_a_value_error() -> None:
    """Anything else than a declared message raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match="needs 'position'"):
        messages.decode(b'{"type":"tick","state":{}}')
    for bad in (b'{"type":"gossip"}', b"[1]", b"not json"):
        with pytest.raises(ValueError):
            messages.decode(bad)


def test_an_encoded_snapshot_fits_the_schema() -> None:
    """A fresh snapshot leaves `recovered` out instead of sending null."""
    schema = {k: SCHEMA[k] for k in ("$schema", "$defs")} | {"$ref": "#/$defs/snapshot"}
    wire = json.loads(Snapshot("1-0", "e", {**EMPTY_STATE, "replay": None}).encode())
    assert "recovered" not in wire
    jsonschema.Draft202012Validator(schema).validate(wire)
