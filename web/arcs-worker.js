// Draws the map's arcs on the OffscreenCanvas map.js hands over, with this worker's own
// animation frames: the page's main thread then makes no frame (style, layout, paint,
// commit) for them, only for what changes in its document.
//
// Messages from map.js: {canvas, colors} once; {size: [w, h], dpr} on a resize (a
// resize drops the arcs, which hold pixel positions); {arcs: [[x0, y0, cx, cy, x1, y1, w,
// delayMs], ...]}; {clear: true}; {hidden: bool} (no drawing in a background tab).

import { ARC_LIFE_MS, drawArcs, FRAME_MS } from "./arcs.js";

let ctx = null;
let colors = null;
let dpr = 1;
let hidden = false;
let arcs = []; // started or waiting, oldest first
let drawn = false; // something is on the canvas
let raf = 0;
let lastAt = -Infinity;

// Every other vsync (FRAME_MS apart): a frame that comes sooner is let pass.
function frame(now) {
  raf = 0;
  if (!ctx || hidden) return;
  if (now - lastAt < FRAME_MS - 8) {
    schedule();
    return;
  }
  lastAt = now;
  const t = performance.now();
  const left = drawArcs(ctx, arcs, t, dpr, colors);
  drawn = left > 0;
  if (arcs.length > 2 * left) arcs = arcs.filter((a) => t - a.born < ARC_LIFE_MS);
  if (left) schedule();
  else arcs.length = 0;
}

function schedule() {
  if (!raf && !hidden && ctx) raf = requestFrame(frame);
}
// (a worker without animation frames draws on a timer)
const requestFrame = self.requestAnimationFrame
  ? (fn) => self.requestAnimationFrame(fn)
  : (fn) => setTimeout(() => fn(performance.now()), FRAME_MS);

self.onmessage = ({ data: m }) => {
  if (m.canvas) {
    ctx = m.canvas.getContext("2d");
    colors = m.colors;
  }
  if (m.size) {
    ctx.canvas.width = m.size[0];
    ctx.canvas.height = m.size[1];
    dpr = m.dpr;
    arcs.length = 0;
    drawn = false;
  }
  if (m.clear) {
    arcs.length = 0;
    if (drawn) ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
    drawn = false;
  }
  if (m.arcs) {
    const now = performance.now();
    for (const [x0, y0, cx, cy, x1, y1, w, delay] of m.arcs) arcs.push({ x0, y0, cx, cy, x1, y1, w, born: now + delay });
  }
  if ("hidden" in m) hidden = m.hidden;
  if (arcs.length) schedule();
};
self.postMessage("ready");
