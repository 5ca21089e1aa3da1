"""The public state's shape, declared once in ticker.core.view: the view, the feed's topics,
the JSON Schema, the protocol's table and the page all follow the declaration."""

import json
import re
from fractions import Fraction
from pathlib import Path

import jsonschema
import orjson

from simulator.generator import DayPlan
from simulator.profile import load
from ticker import feed
from ticker.bench.fanout import payload
from ticker.core.aggregate import State
from ticker.core.batch import End, Start
from ticker.core.view import FIELDS, NAMES, TOPICS, VIEW_NAMES
from ticker.schema import SCHEMA, main, render

ROOT = Path(__file__).resolve().parents[2]
PLAN = DayPlan(load("2018"), Fraction(1, 1000), 0, 600_000, seed=5)


def folded() -> State:
    state = State()
    state.apply(Start("r", 0, PLAN.meta()))
    state.apply_many([b.as_orders("r") for b in PLAN.batches()])
    state.apply(End("r", PLAN.end_seq, PLAN.to_ms))
    return state


def test_the_view_builds_exactly_the_declared_fields_in_order() -> None:
    """An empty and a folded state's views have the declared fields, no more, no fewer."""
    assert tuple(State().view()) == VIEW_NAMES
    assert tuple(folded().view()) == VIEW_NAMES
    assert set(NAMES) - set(VIEW_NAMES) == {"replay"}  # the server adds the replay's status


def test_every_field_has_one_known_topic_and_the_feed_uses_them() -> None:
    """The feed's topics are the declaration's, and each field is in exactly one of them."""
    assert feed.TOPICS is TOPICS
    assert sorted(name for names in TOPICS.values() for name in names) == sorted(NAMES)
    assert all(f.description and "\n" not in f.description for f in FIELDS)


def test_the_schema_file_holds_the_declared_state_definitions() -> None:
    """docs/feed.schema.json's state and full_state are as `python -m ticker.schema` writes them."""
    text = SCHEMA.read_text()
    assert render(text) == text, "run: python -m ticker.schema"


def test_the_schema_command_finds_a_stale_file_and_rewrites_it(tmp_path: Path) -> None:
    """`python -m ticker.schema --check` exits 1 on a drifted copy; without it, it fixes it."""
    doc = json.loads(SCHEMA.read_text())
    del doc["$defs"]["state"]["properties"]["held"]
    stale = tmp_path / "feed.schema.json"
    stale.write_text(json.dumps(doc))
    assert main(["--check", "--path", str(stale)]) == 1
    assert main(["--path", str(stale)]) == 0
    assert stale.read_text() == SCHEMA.read_text()


def _protocol_rows() -> dict[str, str]:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    table = doc.split("### `state`", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        names, _, topic = (cell.strip() for cell in line.strip("|").split("|"))
        rows |= {name: topic for name in re.findall(r"`(\w+)`", names)}
    return rows


def test_the_protocol_table_has_a_row_for_each_field_and_a_field_for_each_row() -> None:
    """docs/protocol.md's state table names every declared field once, with its topic."""
    assert _protocol_rows() == {f.name: f.topic for f in FIELDS}


def test_the_page_reads_only_declared_state_fields() -> None:
    """Every `s.<field>` / `state.<field>` the page's modules (web/*.js) read is declared."""
    app = "\n".join(p.read_text() for p in sorted((ROOT / "web").glob("*.js")))
    read = set(re.findall(r"(?<![.\w])(?:s|state)\.([a-z_][a-z_0-9]*)", app))
    assert read and read <= set(NAMES), sorted(read - set(NAMES))


def test_the_fanout_benchmark_writes_the_aggregators_shape() -> None:
    """The fan-out benchmark's feed entries carry the declared view (plus `fired`), and fit
    the schema's tick state."""
    schema = json.loads(SCHEMA.read_text())
    check = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/state"})
    first, second = orjson.loads(payload(0)), orjson.loads(payload(1))
    assert tuple(first) == (*VIEW_NAMES, "fired") and first != second
    check.validate({k: v for k, v in second.items() if k != "fired"})
