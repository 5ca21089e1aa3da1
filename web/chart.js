// The chart of the day: this replay's cumulative GMV against last year's, drawn when its
// data, axis or size change; the live head (the segment from the last point drawn to the
// counter's value, and its dot) moves on a canvas of its own over it, where only the box
// it was in is cleared. It keeps at most one point per simulated minute.

import { el, layout } from "./dom.js";
import { DAY_MS, fmtClock, fmtMoneyCompact, niceCeil, niceStep, pad2 } from "./format.js";
import { fired } from "./milestones.js";
import { color } from "./theme.js";

const CHART_BUCKET_MS = 60000; // one chart point per simulated minute...
const CHART_MAX_POINTS = 1600; // ...so a whole day is about 1,560 points at most
// The chart is drawn again at most this often when its axis (which eases in steps), size,
// window or colours change, and the head when it has moved half a pixel, as often...
const LAYER_MS = 100;
// ...and at most this often when only points were added: one a simulated minute, many a
// second at high speed (the head's segment spans the few not drawn yet: pixels at most).
const POINTS_MS = 250;
// The zoom inset follows the head on the layer, at most this often.
const INSET_MS = 500;


// The day's curve, [[sim_ms, gmv_fen, orders], ...]: the same rule as
// ticker/core/timeline.py (docs/protocol.md). Ticks carry only its tail.
const STEP_MS = 60000;
const isFixed = (p, fromMs) => p[0] === fromMs || p[0] % STEP_MS === 0;
// [the curve with `tail` folded in, whether it joined]; when it does not join, the
// result is the tail alone and the whole curve must be fetched again.
export function mergeTail(curve, tail, fromMs) {
  if (!tail.length) return [curve.slice(), true];
  const first = tail[0][0];
  const kept = curve.filter((p) => p[0] < first && isFixed(p, fromMs));
  const joined = first === fromMs || (kept.length > 0 && first - kept[kept.length - 1][0] <= STEP_MS);
  if (!joined) return [tail.slice(), false];
  return [kept.concat(tail), true];
}
export function cleanCurve(points) {
  const out = [];
  if (!Array.isArray(points)) return out;
  for (const p of points) {
    if (!Array.isArray(p) || p.length < 2) continue;
    const t = Number(p[0]), g = Number(p[1]), o = Number(p[2]) || 0;
    if (!Number.isFinite(t) || !Number.isFinite(g)) continue;
    if (out.length && t <= out[out.length - 1][0]) continue;
    out.push([t, g, o]);
  }
  return out;
}

export const chart = {
  curve: null, // the day's curve from the state; null = the server sends none (sampled)
  fromMs: 0, // the window's start: points before it are the day before this replay
  labels: [], // text drawn on the canvas, [{text, x, y, w, h}] in CSS px (for tests)
  ts: [], // ms since midnight, ascending
  vs: [], // cumulative fen
  last: [], // last year's [ms, fen], ascending
  ymaxTarget: 0, // fen; grows with the data, never shrinks within a run
  ymax: 0, // shown (eased toward the target)
  dirty: true, // the chart must be drawn again: soon (LAYER_MS)
  grown: false, // only points were added: at POINTS_MS
  drawnFrom: null, // the window's start when it was drawn
  drawnAt: -Infinity, // when the layer was drawn (frame time)
  headAt: -Infinity, // when the head was drawn, and where (device px)
  headXY: null,
  zoomed: false, // the layer holds the zoom inset (which shows the live head)
  zoomedAt: null, // [headT, headV] the inset was drawn with
  curveSig: "",
  tailIndex: -1, // the curve's last point on the layer (the head's segment starts there)
  lastSig: "",
  drawnNow: 0,
  drawnLast: 0,

  reset() {
    this.curve = null;
    this.fromMs = 0;
    this.ts.length = 0;
    this.vs.length = 0;
    this.ymaxTarget = 0;
    this.ymax = 0;
    this.curveSig = "";
    this.dirty = true;
  },
  setLastYear(points) {
    // every tick carries it, unchanged: only a new one is taken in
    const sig = Array.isArray(points) ? points.length + JSON.stringify([points[0], points[points.length - 1]]) : "";
    if (sig === this.lastSig) return;
    this.lastSig = sig;
    this.last = [];
    if (!Array.isArray(points)) return;
    for (const p of points) {
      const t = Number(p && p[0]);
      const v = Number(p && p[1]);
      if (Number.isFinite(t) && Number.isFinite(v)) this.last.push([t, v]);
    }
    this.last.sort((a, b) => a[0] - b[0]);
    this.dirty = true;
  },
  lastYearAt(t) {
    const pts = this.last;
    if (pts.length === 0) return 0;
    if (t <= pts[0][0]) return pts[0][1];
    for (let i = 1; i < pts.length; i++) {
      if (t <= pts[i][0]) {
        const [t0, v0] = pts[i - 1];
        const [t1, v1] = pts[i];
        return t1 > t0 ? v0 + ((v1 - v0) * (t - t0)) / (t1 - t0) : v1;
      }
    }
    return pts[pts.length - 1][1];
  },
  // The whole curve (a snapshot, /api/state, or a tail folded in).
  setCurve(curve, fromMs) {
    // (a tail folded in keeps the points before it: the arrays are rewritten from there)
    let i = 0;
    if (this.curve && fromMs === this.fromMs) {
      const n = Math.min(this.curve.length, curve.length);
      while (i < n && this.curve[i] === curve[i]) i++;
    }
    this.curve = curve;
    this.fromMs = fromMs;
    this.ts.length = i;
    this.vs.length = i;
    for (; i < curve.length; i++) {
      this.ts.push(curve[i][0]);
      this.vs.push(curve[i][1]);
    }
    const last = curve[curve.length - 1];
    if (last) this.grow(last[1], last[0]);
    // A tick moves only the live point, which the head draws: the layer changes when a
    // point is added (once a simulated minute) or the window does.
    const n = curve.length;
    const sig = fromMs + ":" + n + ":" + (n > 1 ? curve[n - 2][0] + ":" + curve[n - 2][1] : "");
    if (fromMs !== this.drawnFrom) this.dirty = true;
    else if (sig !== this.curveSig || this.tailIndex === n - 1) this.grown = true;
    this.curveSig = sig;
  },
  // Each animation frame: the layer if it must change (at most every LAYER_MS), the head
  // if it moved; true while something is left to draw.
  frame(now, headT, headV) {
    const j = this.tailIndex + 1; // a point the counter has now passed joins the layer
    if (j > 0 && j < this.ts.length - 1 && this.ts[j] < headT && this.vs[j] <= headV) this.grown = true;
    const inset = this.zoomed && (this.zoomedAt[0] !== headT || this.zoomedAt[1] !== headV);
    const since = now - this.drawnAt;
    let drew = false;
    if ((this.dirty && since >= LAYER_MS) || (this.grown && since >= POINTS_MS) || (inset && since >= INSET_MS)) {
      this.draw(headT, headV);
      this.drawnAt = now;
      drew = true;
    }
    const moved = this.headMoved(headT, headV);
    if (drew || (moved && now - this.headAt >= LAYER_MS)) {
      this.head(headT, headV);
      this.headAt = now;
    }
    return this.dirty || this.grown || inset || this.headMoved(headT, headV);
  },
  // Whether the head would be drawn half a device pixel or more from where it is.
  headMoved(headT, headV) {
    if (!this.geo || !this.headXY) return !!this.geo;
    const { X, Y, T } = this.geo;
    return Math.abs(X(headT) - this.headXY[0]) >= 0.5 || Math.abs(Math.max(T, Y(headV)) - this.headXY[1]) >= 0.5;
  },
  // Index of the first point of this replay (the window's start), -1 if none yet.
  startIndex() {
    for (let i = 0; i < this.ts.length; i++) if (this.ts[i] >= this.fromMs) return i;
    return -1;
  },
  // Record the state at simulated time t, for a server that sends no curve (one point
  // per bucket; the newest is live).
  sample(t, v) {
    t = Number(t);
    v = Number(v);
    if (!Number.isFinite(t) || !Number.isFinite(v)) return;
    const ts = this.ts;
    const vs = this.vs;
    while (ts.length && ts[ts.length - 1] > t) {
      ts.pop(); // time went back (a seek): forget the future
      vs.pop();
    }
    const n = ts.length;
    // finer in the first ten minutes, where the rush happens (120 points more at most)
    const bucket = t < 600000 ? 5000 : CHART_BUCKET_MS;
    const b = Math.floor(t / bucket);
    if (n >= 2 && Math.floor(ts[n - 1] / bucket) === b && Math.floor(ts[n - 2] / bucket) === b) {
      ts[n - 1] = t; // same minute as the previous point: move the live point
      vs[n - 1] = v;
    } else {
      ts.push(t);
      vs.push(v);
    }
    if (ts.length > CHART_MAX_POINTS) {
      // never reached in a day; halve the resolution if it is
      for (let i = 1, j = 1; i < ts.length; i += 2, j++) {
        ts[j] = ts[i];
        vs[j] = vs[i];
      }
      ts.length = vs.length = Math.ceil(ts.length / 2);
    }
    this.grow(v, t);
    this.grown = true;
  },
  grow(v, t) {
    const want = niceCeil(Math.max(v, this.lastYearAt(t)) * 1.12);
    if (want > this.ymaxTarget) this.ymaxTarget = want;
    if (this.ymax === 0) this.ymax = this.ymaxTarget;
  },
  // Ease the shown axis toward its target; true while it is still moving.
  step(dt) {
    if (this.ymax === this.ymaxTarget) return false;
    const k = 1 - Math.exp(-dt / 180);
    this.ymax += (this.ymaxTarget - this.ymax) * k;
    if (Math.abs(this.ymaxTarget - this.ymax) < this.ymaxTarget * 0.001) this.ymax = this.ymaxTarget;
    this.dirty = true;
    return true;
  },

  // The whole chart, when data, axis or size changed (at most every LAYER_MS); `head`
  // then draws the live tip over it.
  draw(headT, headV) {
    this.dirty = this.grown = false;
    this.drawnFrom = this.fromMs;
    const c = el.chart;
    if (!c.cssW) return;
    this.drawnSize = [c.cssW, c.cssH]; // the size its labels were laid out for (for tests)
    const ctx = c.getContext("2d");
    const W = c.width;
    const H = c.height;
    const dpr = W / Math.max(1, c.cssW);
    const fs = Math.round(layout.rootPx * 0.72 * dpr);
    ctx.clearRect(0, 0, W, H);
    ctx.font = "600 " + fs + "px " + layout.font;
    const ymax = this.ymax || niceCeil(Math.max(headV, 1) * 1.12) || 1;
    const step = niceStep(ymax, H / dpr > 150 ? 4 : 3);
    let labelW = 0;
    for (let v = 0; v <= ymax * 1.0001; v += step) {
      labelW = Math.max(labelW, ctx.measureText(fmtMoneyCompact(v, true)).width);
    }
    const L = Math.round(labelW + 12 * dpr);
    const R = Math.round(10 * dpr);
    const T = Math.round(fs * 0.8);
    const B = Math.round(fs * 2);
    const pw = Math.max(10, W - L - R);
    const ph = Math.max(10, H - T - B);
    const X = (t) => L + (Math.max(0, Math.min(DAY_MS, t)) / DAY_MS) * pw;
    const Y = (v) => T + ph - (v / ymax) * ph;
    this.geo = { X, Y, T, ph, L, pw, dpr };
    const labels = (this.labels = []);
    // Draw a label and record its box (CSS px) so tests can see it sits in the canvas.
    const label = (text, x, y) => {
      const m = ctx.measureText(text);
      const w = m.width;
      const left = ctx.textAlign === "right" ? x - w : ctx.textAlign === "center" ? x - w / 2 : x;
      const top = ctx.textBaseline === "top" ? y : y - fs / 2;
      ctx.fillText(text, x, y);
      labels.push({ text, x: left / dpr, y: top / dpr, w: w / dpr, h: fs / dpr });
    };

    // grid and axes
    ctx.lineWidth = Math.max(1, dpr);
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let v = 0; v <= ymax * 1.0001; v += step) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.strokeStyle = v === 0 ? color("white", 0.22) : color("white", 0.07);
      ctx.beginPath();
      ctx.moveTo(L, y);
      ctx.lineTo(L + pw, y);
      ctx.stroke();
      ctx.fillStyle = color("muted");
      label(fmtMoneyCompact(v, true), L - 6 * dpr, Math.max(y, T - 1 + fs / 2));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let h = 0; h <= 24; h += pw / dpr > 420 ? 3 : 6) {
      const x = Math.round(X(h * 3600000)) + 0.5;
      ctx.strokeStyle = color("white", 0.05);
      ctx.beginPath();
      ctx.moveTo(x, T);
      ctx.lineTo(x, T + ph);
      ctx.stroke();
      ctx.fillStyle = color("muted");
      const text = pad2(h) + ":00";
      const half = ctx.measureText(text).width / 2 + 2 * dpr;
      label(text, Math.min(Math.max(x, half), W - half), T + ph + fs * 0.45);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(L, T - 2 * dpr, pw, ph + 2 * dpr);
    ctx.clip();

    // last year's curve, dashed
    this.drawnLast = 0;
    if (this.last.length > 1) {
      ctx.setLineDash([6 * dpr, 5 * dpr]);
      ctx.strokeStyle = color("last-year", 0.75);
      ctx.lineWidth = 1.6 * dpr;
      ctx.beginPath();
      for (const [t, v] of this.last) {
        if (this.drawnLast === 0) ctx.moveTo(X(t), Y(v));
        else ctx.lineTo(X(t), Y(v));
        this.drawnLast++;
      }
      ctx.stroke();
      ctx.setLineDash([]);
    }

    // this replay's curve, with a soft fill
    const ts = this.ts;
    const vs = this.vs;
    this.drawnNow = 0;
    const n = ts.length;
    const grad = (g) => {
      g.addColorStop(0, color("accent", 0.35));
      g.addColorStop(1, color("accent", 0.02));
      return g;
    };
    const fill = grad(ctx.createLinearGradient(0, T, 0, T + ph));
    this.headFill = grad(el.chartHead.getContext("2d").createLinearGradient(0, T, 0, T + ph));
    this.tail = null;
    this.tailIndex = -1;
    this.zoomed = false;
    if (n > 0) {
      // up to the last point before the live head (the head moves every frame)
      let i = 1;
      const line = new Path2D();
      line.moveTo(X(ts[0]), Y(vs[0]));
      for (; i < n && ts[i] < headT && vs[i] <= headV; i++) {
        line.lineTo(X(ts[i]), Y(vs[i]));
        this.drawnNow++;
      }
      this.tail = [ts[i - 1], vs[i - 1]];
      this.tailIndex = i - 1;
      // the fill is the line closed down to the axis; only the line itself is stroked
      // (stroking the closed shape drew a bar from the last point down to the axis)
      const area = new Path2D(line);
      area.lineTo(X(ts[i - 1]), T + ph);
      area.lineTo(X(ts[0]), T + ph);
      area.closePath();
      ctx.fillStyle = fill;
      ctx.fill(area);
      ctx.strokeStyle = color("accent");
      ctx.lineWidth = 2.6 * dpr;
      ctx.lineJoin = "round";
      ctx.stroke(line);

      // the day before this replay's window (it came with the curve), dimmed
      const from = this.fromMs;
      if (from > 0 && ts[0] < from) {
        const xf = Math.round(X(from)) + 0.5;
        ctx.fillStyle = color("panel", 0.55);
        ctx.fillRect(L, T - 2 * dpr, xf - L, ph + 2 * dpr);
        ctx.setLineDash([3 * dpr, 3 * dpr]);
        ctx.strokeStyle = color("gold", 0.7);
        ctx.lineWidth = Math.max(1, dpr);
        ctx.beginPath();
        ctx.moveTo(xf, T);
        ctx.lineTo(xf, T + ph);
        ctx.stroke();
        ctx.setLineDash([]);
      }

      // milestones passed, as small rings on the curve
      for (const { m, before } of fired.values()) {
        if (before || (m.metric !== "gmv_fen" && m.metric !== "gmv")) continue;
        const t = Number(m.sim_time_ms);
        const v = Number(m.threshold);
        if (!Number.isFinite(t) || !Number.isFinite(v)) continue;
        ctx.beginPath();
        ctx.arc(X(t), Y(v), 3.2 * dpr, 0, Math.PI * 2);
        ctx.strokeStyle = color("gold");
        ctx.lineWidth = 1.5 * dpr;
        ctx.stroke();
      }

    }
    ctx.restore();
    if (this.fromMs > 0 && n > 0 && ts[0] < this.fromMs) {
      // say where this replay starts, inside the plot, on the side with room
      const xf = X(this.fromMs);
      const text = "replay from " + fmtClock(this.fromMs).slice(0, 5);
      const w = ctx.measureText(text).width;
      ctx.fillStyle = color("gold");
      ctx.textBaseline = "top";
      ctx.textAlign = xf + 4 * dpr + w <= L + pw ? "left" : "right";
      label(text, ctx.textAlign === "left" ? xf + 4 * dpr : xf - 4 * dpr, T + 2 * dpr);
    }
    if (n > 1) this.drawZoom(ctx, headT, headV, fs, dpr, label);
  },

  // In the first hours the day-long axis squeezes the rush into a sliver at 00:00, so
  // an inset shows the replay so far at its own scale, against last year.
  drawZoom(ctx, headT, headV, fs, dpr, label) {
    const { T, ph, L, pw } = this.geo;
    const k0 = Math.max(0, this.startIndex());
    const t0 = this.ts[k0];
    const span = headT - t0;
    // (a window from later in the day starts high on the day's axis: no inset)
    if (this.fromMs > 0 || span > 3 * 3600000 || span <= 0 || pw < 160 * dpr || ph < 90 * dpr) return;
    this.zoomed = true;
    this.zoomedAt = [headT, headV];
    const t1 = t0 + Math.max(2 * 60000, span * 1.15);
    const w = Math.round(pw * 0.5);
    const h = Math.round(ph * 0.58);
    const x = L + pw - w - 6 * dpr;
    const y = T + ph - h - 6 * dpr;
    const top = niceCeil(Math.max(headV, this.lastYearAt(headT)) * 1.3) || 1;
    const pad = fs * 0.9;
    const X = (t) => x + pad * 0.6 + ((t - t0) / (t1 - t0)) * (w - pad * 1.2);
    const Y = (v) => y + h - pad * 1.5 - (v / top) * (h - pad * 2.6);
    ctx.save();
    ctx.fillStyle = color("inset", 0.92);
    ctx.strokeStyle = color("white", 0.14);
    ctx.lineWidth = Math.max(1, dpr);
    ctx.beginPath();
    ctx.rect(x + 0.5, y + 0.5, w, h);
    ctx.fill();
    ctx.stroke();
    ctx.font = "600 " + Math.round(fs * 0.9) + "px " + layout.font;
    ctx.fillStyle = color("muted");
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    label("zoom " + fmtClock(t0).slice(0, 5) + "–" + fmtClock(t1).slice(0, 5), x + pad * 0.6, y + pad * 0.4);
    ctx.textAlign = "right";
    label(fmtMoneyCompact(top, true), x + w - pad * 0.6, y + pad * 0.4);
    ctx.beginPath();
    ctx.rect(x + 1, y + 1, w - 2, h - 2);
    ctx.clip();
    ctx.setLineDash([5 * dpr, 4 * dpr]);
    ctx.strokeStyle = color("last-year", 0.75);
    ctx.lineWidth = 1.4 * dpr;
    ctx.beginPath();
    for (let i = 0; i <= 48; i++) {
      const t = t0 + ((t1 - t0) * i) / 48;
      if (i === 0) ctx.moveTo(X(t), Y(this.lastYearAt(t)));
      else ctx.lineTo(X(t), Y(this.lastYearAt(t)));
    }
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(X(this.ts[k0]), Y(this.vs[k0]));
    for (let i = k0 + 1; i < this.ts.length && this.ts[i] <= headT; i++) ctx.lineTo(X(this.ts[i]), Y(this.vs[i]));
    ctx.lineTo(X(headT), Y(headV));
    ctx.strokeStyle = color("accent");
    ctx.lineWidth = 2.2 * dpr;
    ctx.lineJoin = "round";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(X(headT), Y(headV), 3 * dpr, 0, Math.PI * 2);
    ctx.fillStyle = color("white");
    ctx.fill();
    ctx.restore();
  },

  // The segment from the last point drawn to the live head, and its dot, on their own
  // canvas: what was there is cleared by its box alone.
  head(headT, headV) {
    const c = el.chart;
    const h = el.chartHead;
    if (!this.geo || !c.cssW) return;
    if (h.width !== c.width || h.height !== c.height) {
      h.width = c.width; // (which clears it)
      h.height = c.height;
      this.headBox = null;
    }
    const ctx = h.getContext("2d");
    if (this.headBox) ctx.clearRect(...this.headBox);
    this.headBox = null;
    const { X, Y, T, ph, L, pw, dpr } = this.geo;
    const hx = X(headT), hy = Math.max(T, Y(headV));
    this.headXY = [hx, hy];
    if (!this.tail) return;
    const [t0, v0] = this.tail;
    const x0 = X(t0), y0 = Y(v0);
    // everything below is clipped to the plot, and within 8 px of the segment (the dot's
    // halo is 7 px), down to the axis (the fill)
    const clip = [L, T - 8 * dpr, pw + 8 * dpr, ph + 8 * dpr];
    const m = 8 * dpr;
    const bx = Math.floor(Math.max(clip[0], Math.min(x0, hx) - m));
    const by = Math.floor(Math.max(clip[1], Math.min(y0, hy) - m));
    const bx1 = Math.ceil(Math.min(clip[0] + clip[2], Math.max(x0, hx) + m));
    const by1 = Math.ceil(clip[1] + clip[3]);
    if (bx1 <= bx || by1 <= by) return;
    this.headBox = [bx, by, bx1 - bx, by1 - by];
    ctx.save();
    ctx.beginPath();
    ctx.rect(...clip);
    ctx.clip();
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(hx, hy);
    ctx.lineTo(hx, T + ph);
    ctx.lineTo(x0, T + ph);
    ctx.closePath();
    ctx.fillStyle = this.headFill;
    ctx.fill();
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(hx, hy);
    ctx.strokeStyle = color("accent");
    ctx.lineWidth = 2.6 * dpr;
    ctx.lineCap = "round";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(hx, hy, 7 * dpr, 0, Math.PI * 2);
    ctx.fillStyle = color("gold", 0.25);
    ctx.fill();
    ctx.beginPath();
    ctx.arc(hx, hy, 3.4 * dpr, 0, Math.PI * 2);
    ctx.fillStyle = color("white");
    ctx.fill();
    ctx.restore();
  },
};
