"""The delta rules with plain values, on states of a real replay, and web/delta.js against them."""

import functools
import itertools
import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import profile as profiles
from simulator.generator import DayPlan
from ticker import feed
from ticker.commit import feed_payload
from ticker.core.aggregate import State
from ticker.core.batch import Start
from ticker.core.delta import apply, diff

WEB = Path(__file__).resolve().parents[2] / "web"


@functools.cache
def replay_states() -> list[dict[str, Any]]:
    """Feed states of the first two minutes of 2018 at scale 0.01, one per slot (minutes
    turn, milestones fire), with the replay's status as the server adds it (it changes too)."""
    plan = DayPlan(profiles.load("2018"), Fraction(1, 100), 0, 120_000, 0)
    state = State()
    state.apply_many([Start("r", 0, plan.meta())])
    out: list[dict[str, Any]] = []
    for _, group in itertools.groupby(plan.batches(), key=lambda b: b.t1 // 1000):
        state.apply_many([b.as_orders("r") for b in group])
        u = orjson.loads(feed_payload(state, []))
        del u["fired"]
        replay = None if len(out) % 7 == 0 else {"state": "running", "speed": None, "at": len(out)}
        out.append({**u, "replay": replay})
    return out


def test_equal_states_give_an_empty_patch() -> None:
    """Nothing changed: {}; applying it gives the same state."""
    s = {"a": 1, "b": [1, 2], "c": {"d": None}}
    assert diff(s, dict(s)) == {}
    assert apply(s, {}) == s


def test_null_is_a_value_not_a_deletion() -> None:
    """A field that becomes null is sent as null and stays in the state."""
    old, new = {"replay": {"state": "running"}, "n": 1}, {"replay": None, "n": 1}
    assert diff(old, new) == {"replay": None}
    assert apply(old, {"replay": None}) == new


def test_an_array_of_the_same_length_is_patched_by_index() -> None:
    """One amount of a top list changes: only that element's field travels."""
    old = {"top": [{"name": "a", "gmv_fen": 5}, {"name": "b", "gmv_fen": 3}]}
    new = {"top": [{"name": "a", "gmv_fen": 7}, {"name": "b", "gmv_fen": 3}]}
    assert diff(old, new) == {"top": {"0": {"gmv_fen": 7}}}
    assert apply(old, {"top": {"0": {"gmv_fen": 7}}}) == new


def test_an_array_that_changes_length_is_sent_whole() -> None:
    """A milestone fired: the list is replaced, as in RFC 7386."""
    assert diff({"m": [1]}, {"m": [1, 2]}) == {"m": [1, 2]}


def test_a_key_lost_or_an_array_turned_object_is_no_patch() -> None:
    """No patch can say it: None (the server sends a full tick)."""
    assert diff({"a": 1, "b": 2}, {"a": 1}) is None
    assert diff({"a": [1]}, {"a": {"0": 1}}) is None


def test_an_integer_that_becomes_a_float_or_a_bool_is_a_change() -> None:
    """1, 1.0 and True are equal in Python but not on the wire."""
    assert diff({"x": 1}, {"x": 1.0}) == {"x": 1.0}
    assert diff({"x": 1}, {"x": True}) == {"x": True}


def test_apply_leaves_the_state_it_was_given_as_it_was() -> None:
    """The client's previous state is not modified in place."""
    old = {"top": [{"gmv_fen": 1}], "r": {"s": 1}}
    apply(old, {"top": {"0": {"gmv_fen": 2}}, "r": {"s": 2}})
    assert old == {"top": [{"gmv_fen": 1}], "r": {"s": 1}}


def test_every_step_of_a_real_replay_is_patched_exactly_and_smaller() -> None:
    """Consecutive states of a real replay: apply(old, diff) is the new one, in fewer bytes."""
    states = replay_states()
    assert len(states) > 100
    for old, new in itertools.pairwise(states):
        patch = diff(old, new)
        assert patch is not None and apply(old, patch) == new
        assert len(orjson.dumps(patch)) < len(orjson.dumps(new))


@settings(max_examples=100, deadline=None)
@given(
    i=st.integers(0, 110),
    skip=st.integers(1, 40),
    topics=st.sets(st.sampled_from(sorted(feed.TOPICS))),
)
def test_any_two_states_of_a_replay_under_any_topics_patch_exactly(
    i: int, skip: int, topics: set[str]
) -> None:
    """A coalesced client (positions skipped) under any subscription: exact."""
    states = replay_states()
    sub = frozenset(topics) | {"totals"}
    old, new = (feed.only(s, sub) for s in (states[i], states[min(i + skip, len(states) - 1)]))
    patch = diff(old, new)
    assert patch is not None and apply(old, patch) == new


def typed(value: Any) -> Any:
    """`value` with each scalar's type beside it: 1, 1.0 and True differ, as on the wire."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(
    old=st.dictionaries(st.text(max_size=2), json_values),
    new=st.dictionaries(st.text(max_size=2), json_values),
)
def test_any_json_objects_patch_exactly_or_not_at_all(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    """Arbitrary JSON objects: a patch, when there is one, gives exactly the new object."""
    patch = diff(old, new)
    if patch is not None:
        assert typed(apply(old, patch)) == typed(new)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_web_delta_js_applies_patches_as_python_does() -> None:
    """web/delta.js, run by node, on real replay steps and the edge cases above."""
    states = replay_states()
    cases = [[old, diff(old, new)] for old, new in itertools.pairwise(states[::9])]
    cases += [
        [{"a": 1, "r": {"s": 1}}, {"r": None}],
        [{"a": [[1, 2], [3]]}, {"a": {"0": {"1": 9}}}],
    ]
    cases += [[{"a": None}, {"a": {"b": {"c": None}}}], [{"__proto__": 1}, {"__proto__": {"x": 1}}]]
    script = (
        f"import {{applyDelta}} from {json.dumps((WEB / 'delta.js').as_uri())};"
        "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write("
        "JSON.stringify(JSON.parse(s).map(([st,p])=>applyDelta(st,p)))));"
    )
    run = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(run.stdout) == [apply(old, patch) for old, patch in cases]
