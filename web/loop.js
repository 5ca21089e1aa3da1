// One animation loop drives the counters, the chart's head and the map's arcs, at most
// FRAME_MS apart, and stops when nothing moves (a hidden tab gets no frames at all).

import { chart } from "./chart.js";
import { counters, gmv, orders, pace } from "./counter.js";
import { map } from "./map.js";
import { state } from "./store.js";

const STALL_MS = 1500; // no tick for this long: settle on the exact value
// At most ~30 frames a second while arcs fly: they look as smooth as at 60, at half the
// work. The counters' digits change ~10 times a second, like a stadium board's (every
// change costs a style and layout pass): when only they and the chart's head move, the
// loop runs at that rate.
const FRAME_MS = 33;
const DIGITS_MS = 100;
const VSYNC_MS = 16;

let rafId = 0;
let waitTimer = 0;
let lastFrameAt = 0;
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
  lastFrameAt = now;
  let moving = false;
  const show = now - digitsAt >= DIGITS_MS - VSYNC_MS / 2;
  if (show) digitsAt = now;
  for (const c of counters) moving = c.step(dt, show) || moving;
  let writing = false;
  for (const w of writers) writing = w(now, show) || writing;
  if (moving && performance.now() - pace.lastTickAt > STALL_MS) {
    settleAll(); // the feed went quiet: land on the exact received values
    moving = false;
  }
  const axis = chart.step(dt);
  const headT = Number(state && state.sim_time_ms) || 0;
  const headV = gmv.target > 0 ? gmv.shown : 0;
  const drawing = chart.frame(now, headT, headV);
  const arcs = map.frame(now, show);
  if (moving || axis || arcs || drawing || writing) {
    // the next frame after the vsync that follows `gap` - VSYNC_MS from now
    const gap = arcs ? FRAME_MS : DIGITS_MS;
    waitTimer = setTimeout(() => {
      waitTimer = 0;
      kick();
    }, gap - VSYNC_MS);
  } else {
    lastFrameAt = 0;
  }
  checkEnded();
}

// Something changed: make sure a frame comes.
export function kick() {
  if (!rafId && !waitTimer) rafId = requestAnimationFrame(frame);
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
