// One requestAnimationFrame loop drives the counters, the chart's head and the map's arcs,
// and stops when nothing moves.

import { chart } from "./chart.js";
import { counters, gmv, orders, pace } from "./counter.js";
import { map } from "./map.js";
import { state } from "./store.js";

const STALL_MS = 1500; // no tick for this long: settle on the exact value

let rafId = 0;
let lastFrameAt = 0;

function frame(now) {
  rafId = 0;
  const dt = lastFrameAt ? Math.min(now - lastFrameAt, 1000) : 16;
  lastFrameAt = now;
  let moving = false;
  for (const c of counters) moving = c.step(dt) || moving;
  if (moving && performance.now() - pace.lastTickAt > STALL_MS) {
    settleAll(); // the feed went quiet: land on the exact received values
    moving = false;
  }
  const axis = chart.step(dt);
  const headT = Number(state && state.sim_time_ms) || 0;
  const headV = gmv.target > 0 ? gmv.shown : 0;
  const redraw = chart.dirty;
  if (redraw) chart.draw(headT, headV);
  if (redraw || moving) chart.head(headT, headV);
  const arcs = map.frame(now);
  if (moving || axis || arcs || chart.dirty) rafId = requestAnimationFrame(frame);
  else lastFrameAt = 0;
  checkEnded();
}

// Something changed: make sure a frame comes.
export function kick() {
  if (!rafId) rafId = requestAnimationFrame(frame);
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
