// The running counters (GMV and orders). A counter animates from what it displays toward
// the highest value received, at a speed that covers the remaining gap in about one tick
// interval. It is clamped at the received value (never shows more than the server sent)
// and never moves backwards.

import { el, setText } from "./dom.js";
import { fmtInt, fmtMoney } from "./format.js";

export class Counter {
  constructor(node, format) {
    this.node = node;
    this.format = format;
    this.reset();
  }
  reset() {
    this.target = 0;
    this.shown = 0;
    this.speed = 0; // units per ms
    this.render();
  }
  // Raise the target (never lowers it) and aim to arrive in ~intervalMs.
  push(value, intervalMs) {
    value = Number(value);
    if (!Number.isFinite(value)) return;
    if (value > this.target) this.target = value;
    const gap = this.target - this.shown;
    this.speed = gap > 0 ? gap / Math.max(16, intervalMs) : 0;
  }
  settle() {
    if (this.target > this.shown) this.shown = this.target;
    this.speed = 0;
    this.render();
  }
  // Advance by dtMs; the digits are written only when `show` (the loop shows them at
  // about the ticks' rate: each write costs the page a style and layout pass) or on landing.
  step(dtMs, show) {
    if (this.shown < this.target) {
      this.shown = Math.min(this.target, this.shown + this.speed * dtMs);
      if (show || this.shown >= this.target) this.render();
    }
    return this.shown < this.target;
  }
  render() {
    setText(this.node, this.format(this.shown));
  }
}

export const gmv = new Counter(el.gmv, fmtMoney);
export const orders = new Counter(el.orders, fmtInt);
export const counters = [gmv, orders];

// The ticks' pace: a smoothed inter-arrival time (the counters glide over about one), and
// when the last one came (a feed quiet for long settles the counters).
export const pace = { intervalMs: 100, lastTickAt: 0 };

export function noteTick(isSnapshot) {
  const now = performance.now();
  if (!isSnapshot && pace.lastTickAt) {
    const dt = Math.min(1000, Math.max(40, now - pace.lastTickAt));
    pace.intervalMs = pace.intervalMs * 0.8 + dt * 0.2;
  }
  pace.lastTickAt = now;
}
