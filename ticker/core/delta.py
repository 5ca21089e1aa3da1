"""Delta ticks: what changed between two states, as a patch, and the rule that applies it.

Pure (plain JSON values in, plain JSON values out). A patch is a JSON merge patch
(RFC 7386) with two changes, because the feed's states are not documents that lose keys but
records whose fields are fixed by the subscription, and whose lists mostly keep their length
(the top-10 lists, the curve's tail) while their amounts move every tick:

1. **null is a value**: `{"replay": null}` sets `replay` to null (RFC 7386 would delete it).
   Nothing is ever deleted; a change that would need a deletion (an object losing a key)
   is not a patch at all: `diff` answers None and the server sends a full tick.
2. **an object patches an array by index**: when the value held is an array and the patch's
   value is an object, each key is a decimal index `i` of that array and its value is
   patched into element `i` by these same rules; the array keeps its length. An array in a
   patch replaces the value whole (as in RFC 7386), so does any string, number, bool or null.

`apply(state, patch)` is the whole rule (the page's `web/delta.js` is the same in
JavaScript). `diff(old, new)` gives a patch such that `apply(old, diff(old, new)) == new`,
or None when there is none (see 1.).
"""

from typing import Any

import orjson


class _Inexpressible(Exception):
    """`new` cannot be reached from `old` by a patch (a key lost, an array made an object)."""


def apply(value: Any, patch: Any) -> Any:
    """The value after `patch` (see the module's rules); `value` is left as it was, and
    the parts the patch does not touch are shared with it."""
    if not isinstance(patch, dict):
        return patch
    if isinstance(value, list):
        out = list(value)
        for k, v in patch.items():
            i = int(k)
            out[i] = apply(out[i], v)
        return out
    base: dict[str, Any] = value if isinstance(value, dict) else {}
    merged = dict(base)
    for k, v in patch.items():
        merged[k] = apply(base.get(k), v)
    return merged


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The patch that takes `old` to `new` (`{}` when they are equal), or None when no patch
    can (`new` lacks a key of `old`, or turned an array into an object)."""
    try:
        changed, patch = _diff(old, new)
    except _Inexpressible:
        return None
    return patch if changed else {}


_SCALARS = frozenset({int, str, bool, float, type(None)})


def _same_scalar(a: Any, b: Any) -> bool:
    # 1 == 1.0 == True in Python, but not on the wire: the type must match too.
    return type(a) is type(b) and a == b


def _diff(old: Any, new: Any) -> tuple[bool, Any]:
    """(whether `new` differs from `old`, the patch value that makes it so)."""
    if isinstance(new, dict):
        if isinstance(old, list):
            raise _Inexpressible  # an object here would be read as an index patch
        if not isinstance(old, dict):
            return True, new  # an object patched onto a non-object is that object
        if not old.keys() <= new.keys():
            raise _Inexpressible  # would need a deletion
        patch: dict[str, Any] = {}
        for k, v in new.items():
            if k not in old:
                patch[k] = v
                continue
            o = old[k]
            if type(o) is type(v) and type(v) in _SCALARS and o == v:
                continue  # the common case, without a call
            changed, sub = _diff(o, v)
            if changed:
                patch[k] = sub
        return bool(patch), patch
    if isinstance(new, list):
        if not isinstance(old, list) or len(old) != len(new):
            return True, new
        by_index: dict[str, Any] = {}
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if type(a) is type(b) and type(b) in _SCALARS and a == b:
                continue
            try:
                changed, sub = _diff(a, b)
            except _Inexpressible:
                return True, new  # this element cannot be patched: send the array whole
            if changed:
                by_index[str(i)] = sub
        if not by_index:
            return False, None
        # Whichever is shorter on the wire: most ticks change a few amounts of a top-10
        # list; a list that shifted (the curve's tail at a new minute) is sent whole.
        if len(orjson.dumps(by_index)) < len(orjson.dumps(new)):
            return True, by_index
        return True, new
    if isinstance(old, dict | list):
        return True, new
    return (not _same_scalar(old, new)), new
