// One animation loop drives the counters, the chart's head and the map's launches, and
// stops when nothing moves (a hidden tab gets no frames at all). The arcs themselves fly
// on a worker's frames (map.js), so this loop runs at the counters' pace.

import { FRAME_MS } from "./arcs.js";
import { chart } from "./chart.js";
import { counters, gmv, orders, pace } from "./counter.js";
import { stepGlides } from "./glide.js";
import { map } from "./map.js";
import { state } from "./store.js";

const STALL_MS = 1500; // no tick for this long: settle on the exact value
// The counters' digits change ~10 times a second, like a stadium board's (every change
// costs a frame with a style and layout pass): the loop runs at that rate, or at FRAME_MS
// while this page draws arcs itself (a browser that cannot hand them to a worker).
export const DIGITS_MS = 100;
const VSYNC_MS = 16;

let rafId = 0;
let waitTimer = 0;
let lastFrameAt = 0; // 0 when the loop has stopped (the next step is a short one)
let frameAt = -Infinity; // the last frame, stopped or not
let digitsAt = 0;
// Other DOM writers that run on the digits' frames, so that their style and layout pass
// is the one the digits take anyway; each returns true while it has something left to do.
const writers = [];
export function onDigitsFrame(fn) {
  writers.push(fn);
}

function frame(now) {
  rafId = 0;
  const dt = lastFrameAt ? Math.min(now - lastFrameAt, 1000) : 16;
  lastFrameAt = frameAt = now;
  let moving = false;
  const show = now - digitsAt >= DIGITS_MS - VSYNC_MS / 2;
  if (show) digitsAt = now;
  // the panels first: a list that reorders reads its rows' places before anything is
  // written in this frame (a read after a write would lay the page out twice)
  let writing = false;
  for (const w of writers) writing = w(now, show) || writing;
  for (const c of counters) moving = c.step(dt, show) || moving;
  const gliding = stepGlides(now);
  if (moving && performance.now() - pace.lastTickAt > STALL_MS) {
    settleAll(); // the feed went quiet: land on the exact received values
    moving = false;
  }
  const axis = chart.step(dt);
  const headT = Number(state && state.sim_time_ms) || 0;
  const headV = gmv.target > 0 ? gmv.shown : 0;
  const drawing = chart.frame(now, headT, headV);
  const arcs = map.frame(now, show);
  if (moving || gliding || axis || arcs || drawing || writing) {
    kick();
  } else {
    lastFrameAt = 0;
  }
  checkEnded();
}

// Something changed: make sure a frame comes, `gap` after the last one at the earliest
// (a tick arriving between two frames waits for the next: the digits change at that pace
// anyway, and an extra frame would cost a style and layout pass for nothing).
export function kick() {
  if (rafId || waitTimer) return;
  const gap = map.drawsHere ? FRAME_MS : DIGITS_MS;
  // the next frame after the vsync that follows `gap` - VSYNC_MS from the last one
  const wait = frameAt + gap - VSYNC_MS - performance.now();
  if (wait > 0) {
    waitTimer = setTimeout(() => {
      waitTimer = 0;
      rafId = requestAnimationFrame(frame);
    }, wait);
  } else {
    rafId = requestAnimationFrame(frame);
  }
}

// Land the counters on what was received (the feed went quiet, or a new run).
export function settleAll() {
  for (const c of counters) c.settle();
  chart.dirty = true;
  kick();
  checkEnded();
}

// body[data-ended] once the day is over and the counters show its final values.
export function checkEnded() {
  const settled = gmv.shown >= gmv.target && orders.shown >= orders.target;
  if (state && state.ended === true && settled) {
    if (document.body.dataset.ended !== "true") document.body.dataset.ended = "true";
  } else if (document.body.dataset.ended) {
    delete document.body.dataset.ended;
  }
}
