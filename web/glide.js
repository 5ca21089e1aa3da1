// Bars and meters that glide to a new length (a transform: scaleX) on the page's own
// frames. A CSS transition would look the same at a higher frame rate, but Chromium makes
// a main-thread frame of its own to start and to end each one (bars and meters change a
// few times a second: that was most of the page's frames); these steps ride on the frames
// the counters' digits take anyway (loop.js calls stepGlides).

import { reducedMotion, setStyle } from "./dom.js";
import { kick } from "./loop.js";

const gliding = new Map(); // node -> { from, to, at, ms, ease }
const shown = new WeakMap(); // node -> scale written last (style.css starts them at 0)

export const EASE_OUT = (x) => 1 - (1 - x) * (1 - x);
export const LINEAR = (x) => x;

function write(node, v) {
  shown.set(node, v);
  setStyle(node, "transform", "scaleX(" + v.toFixed(4) + ")");
}

// Glide `node`'s scaleX to `to` (0..1) over `ms` (from where it is now, even mid-glide).
// Steps finer than `still` (a share of the bar that moves no pixel) are not taken.
export function glideTo(node, to, ms, ease = LINEAR, still = 0.001) {
  const g = gliding.get(node);
  const now = performance.now();
  const from = g ? valueOf(g, now) : shown.get(node) || 0;
  if (Math.abs(to - (g ? g.to : from)) < still) return;
  if (reducedMotion) {
    write(node, to);
    return;
  }
  gliding.set(node, { from, to, at: now, ms, ease });
  kick();
}

function valueOf(g, now) {
  const x = Math.min(1, Math.max(0, (now - g.at) / g.ms));
  return g.from + (g.to - g.from) * g.ease(x);
}

// One step of every glide; true while any is left.
export function stepGlides(now) {
  for (const [node, g] of gliding) {
    write(node, valueOf(g, now));
    if (now - g.at >= g.ms) gliding.delete(node);
  }
  return gliding.size > 0;
}
