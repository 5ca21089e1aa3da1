"""docs/asyncapi.yaml: every reference resolves, and real /sse events fit it."""

import json
from pathlib import Path
from typing import Any

import jsonschema
import websockets
import yaml

from tests.server.conftest import Live, eventually, recv, recv_type
from tests.server.test_replay_state import beat, status
from tests.server.test_sse import curl, sse_url
from ticker import feed

DOCS = Path(__file__).resolve().parents[2] / "docs"
API = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
SCHEMA = json.loads((DOCS / "feed.schema.json").read_text())
MILESTONE = {
    "id": "gmv_1bn",
    "label": "RMB 1bn",
    "metric": "gmv_fen",
    "threshold": 100_000_000_000,
    "documented": "00:01",
    "sim_time_ms": 60_000,
    "sim_time": "00:01:00.000",
}


def refs(node: Any) -> list[str]:
    """Every $ref in the document."""
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(ref: str) -> Any:
    doc, _, pointer = ref.partition("#")
    node = {"": API, "feed.schema.json": SCHEMA}[doc]
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def payload_validator(message: str) -> jsonschema.Draft202012Validator:
    ref = API["components"]["messages"][message]["payload"]["$ref"]
    definition = ref.partition("#/$defs/")[2]
    schema = {k: SCHEMA[k] for k in ("$schema", "$defs")} | {"$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema)


def test_every_reference_in_the_asyncapi_document_resolves() -> None:
    """Local references and the payloads' references into feed.schema.json all exist."""
    assert API["asyncapi"].startswith("3.")
    found = refs(API)
    assert len(found) > 20
    for ref in found:
        assert resolve(ref) is not None, ref


def test_the_subscribe_topics_are_the_servers() -> None:
    """The topics the document offers are the ones the server takes."""
    topics = API["components"]["messages"]["subscribe"]["payload"]["properties"]["topics"]
    assert sorted(topics["items"]["enum"]) == sorted(feed.TOPICS)


async def test_real_sse_events_fit_the_asyncapi_document(live: Live) -> None:
    """hello, snapshot, tick, milestone and replay events: names, ids and payloads."""
    channel = API["channels"]["events"]["messages"]
    await live.redis.set(live.keys.epoch, "E1")
    await eventually(lambda: live.hub.epoch == "E1")
    async with curl(sse_url(live)) as c:
        got = [await c.next(), await c.until("snapshot")]
        await live.write([MILESTONE], gmv_fen=9)
        got += [await c.until("milestone"), await c.until("tick")]
        await beat(live, status("paused"))
        got.append(await c.until("replay"))
    assert [e["event"] for e in got] == ["hello", "snapshot", "milestone", "tick", "replay"]
    for e in got:
        message = API["components"]["messages"][e["event"]]
        assert e["event"] in channel
        assert ("id" in e) is message["x-sse-id"]
        payload_validator(e["event"]).validate(e["data"])


async def test_real_websocket_messages_fit_the_asyncapi_document(live: Live) -> None:
    """hello, snapshot, milestone, tick, replay and error on /ws fit the feed channel."""
    channel = API["channels"]["feed"]["messages"]
    async with websockets.connect(live.ws_url) as ws:
        got = [await recv(ws), await recv_type(ws, "snapshot")]
        await live.write([MILESTONE], gmv_fen=9)
        got += [await recv_type(ws, "milestone"), await recv_type(ws, "tick")]
        await beat(live, status("paused"))
        got.append(await recv_type(ws, "replay"))
        await ws.send("not json")
        got.append(await recv_type(ws, "error"))
    for msg in got:
        assert msg["type"] in channel
        payload_validator(msg["type"]).validate(msg)
