// Delta ticks (docs/protocol.md, "Delta ticks"): the rule that applies a `delta` message's
// patch to the state of the previous tick or delta. The same rule as ticker/core/delta.py:
// a JSON merge patch (RFC 7386) where null is a value (never a deletion) and an object
// patches an array by index (keys are decimal indices; the array keeps its length).
// Standalone ES module, no dependencies. The value passed in is left as it was; the parts
// the patch does not touch are shared with the result.

export function applyDelta(current, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  if (Array.isArray(current)) {
    const out = current.slice();
    for (const key of Object.keys(patch)) {
      const i = Number(key);
      out[i] = applyDelta(out[i], patch[key]);
    }
    return out;
  }
  const base = current !== null && typeof current === "object" ? current : {};
  const out = { ...base };
  for (const key of Object.keys(patch)) {
    const value = applyDelta(Object.hasOwn(base, key) ? base[key] : undefined, patch[key]);
    // defineProperty, not `out[key] =`: a key "__proto__" stays a plain key, as JSON.parse made it.
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
