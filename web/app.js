// 11.11 festival counter — browser client.
// One WebSocket to ./ws, a switch on message type, DOM updated with textContent.
// Everything that lives for hours is bounded: list rows and milestone items are reused,
// the chart keeps at most one point per simulated minute, the map at most MAX_ARCS arcs.
// One requestAnimationFrame loop drives the counters, the chart head and the arcs, and
// stops when nothing moves.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    header: document.querySelector(".topbar"),
    title: $("title"),
    scale: $("scale"),
    replayChip: $("replay-chip"),
    endedChip: $("ended-chip"),
    status: $("status"),
    statusWrap: $("status-wrap"),
    banner: $("banner"),
    bannerText: $("banner-text"),
    bannerDoc: $("banner-doc"),
    announcer: $("announcer"),
    gmv: $("gmv"),
    curRmb: $("cur-rmb"),
    curUsd: $("cur-usd"),
    usdNote: $("usd-note"),
    orders: $("orders"),
    clock: $("clock"),
    rateGmv: $("rate-gmv"),
    rateOrders: $("rate-orders"),
    meterGmv: $("meter-gmv"),
    meterGmvPeak: $("meter-gmv-peak"),
    meterOrders: $("meter-orders"),
    meterOrdersPeak: $("meter-orders-peak"),
    dayProgress: $("day-progress"),
    vsLastYear: $("vs-last-year"),
    nextMilestone: $("next-milestone"),
    topCategories: $("top-categories"),
    topCountries: $("top-countries"),
    milestones: $("milestones"),
    milestonesEmpty: $("milestones-empty"),
    upcoming: $("upcoming"),
    feed: $("feed"),
    chart: $("chart"),
    mapBase: $("map-base"),
    mapArcs: $("map-arcs"),
    controls: $("controls"),
    ctlPause: $("ctl-pause"),
    ctlSpeed: $("ctl-speed"),
    ctlSeek: $("ctl-seek"),
    ctlSeekGo: $("ctl-seek-go"),
    ctlMsg: $("ctl-msg"),
    error: $("error"),
    server: $("server"),
    basis: $("basis"),
    brandLine: $("brand-line"),
    brandsOver: $("brands-over"),
    intlShare: $("intl-share"),
    regionsAbroad: $("regions-abroad"),
    regionsFigure: $("regions-figure"),
    topBrands: $("top-brands"),
    msPanel: document.querySelector(".area-ms"),
    since: [...document.querySelectorAll(".since")],
  };

  const DAY_MS = 86400000;
  const TOP_N = 10;
  const BANNER_MS = 4500;
  const BANNER_MS_BUSY = 2500; // when several milestones are queued
  const BANNER_FADE_MS = 400;
  const STALL_MS = 1500; // no tick for this long: settle on the exact value
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_MAX_MS = 5000;
  const RESUMED_MS = 5000; // how long "resumed" shows before "live"
  const CHART_BUCKET_MS = 60000; // one chart point per simulated minute...
  const CHART_MAX_POINTS = 1600; // ...so a whole day is about 1,560 points at most
  const MAX_ARCS = 40; // arcs on the map at once (the real screen's "flying-line pool")
  const ARC_QUEUE = 24; // orders waiting for an arc; older ones are dropped
  const ARC_SPACING_MS = 65; // at most ~15 new arcs a second
  const ARC_FLIGHT_MS = 1300;
  const ARC_LIFE_MS = 2600;
  const FEED_ROWS = 8;
  const FEED_EVERY_MS = 450;
  const GOLD = "#ffc15e";
  const ACCENT = "#ff5a1f";

  // Tokens live in this tab's session storage: index.html moves a ?token= (control) or
  // ?feed_token= out of the address before anything is requested. The address is read
  // only when storage is unavailable.
  function storedToken(key, param) {
    try {
      const v = sessionStorage.getItem(key);
      if (v !== null) return v;
    } catch (e) {
      /* storage unavailable */
    }
    return new URLSearchParams(location.search).get(param) || "";
  }
  const token = storedToken("ticker.token", "token");
  const feedToken = storedToken("ticker.feed_token", "feed_token");

  const reducedMotion = window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches;

  // ---------------------------------------------------------------- formatting

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const fmtInt = (n) => intFmt.format(Math.floor(Number(n) || 0));

  let currency = "RMB";
  let usdRate = 0; // RMB per USD; 0 = unknown (no USD toggle)

  const useUsd = () => currency === "USD" && usdRate > 0;
  // Whole units of the shown currency for an amount in fen.
  const units = (fen) => (Number(fen) || 0) / 100 / (useUsd() ? usdRate : 1);
  const sym = () => (useUsd() ? "US$" : "¥");
  const fmtMoney = (fen) => sym() + fmtInt(units(fen));

  function fmtCompactUnits(y, symbol, trim) {
    const steps = [[1e12, "tn"], [1e9, "bn"], [1e6, "m"], [1e3, "k"]];
    for (const [div, suffix] of steps) {
      if (y >= div) {
        const v = y / div;
        const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
        return symbol + (trim ? String(parseFloat(v.toFixed(digits))) : v.toFixed(digits)) + suffix;
      }
    }
    return symbol + fmtInt(y);
  }
  const fmtMoneyCompact = (fen, trim) => fmtCompactUnits(units(fen), sym(), trim);

  const pad2 = (n) => (n < 10 ? "0" : "") + n;
  function fmtClock(ms) {
    ms = Math.max(0, Math.min(DAY_MS, Math.floor(Number(ms) || 0)));
    const s = Math.floor(ms / 1000);
    return pad2(Math.floor(s / 3600)) + ":" + pad2(Math.floor(s / 60) % 60) + ":" + pad2(s % 60);
  }
  const milestoneClock = (m) =>
    typeof m.sim_time === "string" && m.sim_time.length >= 8 ? m.sim_time.slice(0, 8) : fmtClock(m.sim_time_ms);

  // "HH:MM[:SS[.mmm]]" -> ms since midnight, or null.
  function parseClock(text) {
    const m = /^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(String(text ?? "").trim());
    if (!m) return null;
    const ms = ((+m[1] * 60 + +m[2]) * 60 + +(m[3] || 0)) * 1000 + +((m[4] || "0") + "00").slice(0, 3);
    return +m[2] < 60 && +(m[3] || 0) < 60 && ms <= DAY_MS ? ms : null;
  }

  // The replay's scale (state.scale, a decimal string): every amount is on it.
  const scaleOf = () => {
    const k = Number(state && state.scale);
    return Number.isFinite(k) && k > 0 ? k : 1;
  };
  const fmtCount = (n) => fmtCompactUnits(Number(n) || 0, "", true);
  // A milestone's label with its amount on the counter's scale: the profile writes real
  // amounts ("Passes 2017's total (RMB 168.2bn)"); the threshold is already scaled.
  function msLabel(m) {
    const text = String(m.label ?? m.id);
    const th = Number(m.threshold);
    if (scaleOf() === 1 || !Number.isFinite(th)) return text;
    if (m.metric === "orders") {
      return text.replace(/\d[\d.,]*\s?(?:tn|bn|m|k)?(?=\s+(?:delivery\s+)?orders)/i, fmtCount(th));
    }
    return text.replace(/RMB\s?\d[\d.,]*\s?(?:tn|bn|m|k)?\b/i, fmtMoneyCompact(th, true));
  }

  function fmtDelta(ms) {
    const s = Math.round(ms / 1000);
    if (s === 0) return "on time";
    const a = Math.abs(s);
    const txt = a < 60 ? a + "s" : a < 3600 ? Math.round(a / 60) + "m" : (a / 3600).toFixed(1) + "h";
    return (s < 0 ? "−" : "+") + txt;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // Hash of a string into [0, 1), for stable jitter.
  function hash01(str) {
    let h = 2166136261;
    for (let i = 0; i < str.length; i++) h = Math.imul(h ^ str.charCodeAt(i), 16777619);
    return ((h >>> 0) % 100000) / 100000;
  }

  // ---------------------------------------------------------------- counters
  // A counter animates from what it displays toward the highest value received,
  // at a speed that covers the remaining gap in about one tick interval. It is
  // clamped at the received value (never shows more than the server sent) and
  // never moves backwards.

  class Counter {
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
    step(dtMs) {
      if (this.shown < this.target) {
        this.shown = Math.min(this.target, this.shown + this.speed * dtMs);
        this.render();
      }
      return this.shown < this.target;
    }
    render() {
      setText(this.node, this.format(this.shown));
    }
  }

  const gmv = new Counter(el.gmv, fmtMoney);
  const orders = new Counter(el.orders, fmtInt);
  const counters = [gmv, orders];

  let tickIntervalMs = 100; // smoothed inter-arrival time of ticks
  let lastTickAt = 0;
  let lastFrameAt = 0;
  let rafId = 0;

  // ---------------------------------------------------------------- canvases

  // Layout figures, read only when the layout changes (never inside the frame loop,
  // where reading them would force a synchronous layout every frame).
  const layout = { rootPx: 16, font: "sans-serif", dpr: 1 };
  function readLayout() {
    const cs = getComputedStyle(document.documentElement);
    layout.rootPx = parseFloat(cs.fontSize) || 16;
    layout.font = cs.getPropertyValue("--font").trim() || "sans-serif";
    layout.dpr = Math.min(2, window.devicePixelRatio || 1);
  }

  // Size a canvas's backing store to its CSS box (w x h CSS px).
  function fitCanvas(canvas, w, h) {
    canvas.cssW = w;
    canvas.cssH = h;
    const bw = Math.max(1, Math.round(w * layout.dpr));
    const bh = Math.max(1, Math.round(h * layout.dpr));
    if (canvas.width !== bw) canvas.width = bw;
    if (canvas.height !== bh) canvas.height = bh;
  }

  // ---------------------------------------------------------------- chart

  // "Nice" axis maximum: the smallest 1, 2, 2.5 or 5 x 10^k at or above v.
  function niceCeil(v) {
    if (!(v > 0)) return 0;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function niceStep(max, count) {
    const raw = max / count;
    const p = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  // The day's curve, [[sim_ms, gmv_fen, orders], ...]: the same rule as
  // ticker/core/timeline.py (docs/protocol.md). Ticks carry only its tail.
  const STEP_MS = 60000;
  const isFixed = (p, fromMs) => p[0] === fromMs || p[0] % STEP_MS === 0;
  // [the curve with `tail` folded in, whether it joined]; when it does not join, the
  // result is the tail alone and the whole curve must be fetched again.
  function mergeTail(curve, tail, fromMs) {
    if (!tail.length) return [curve.slice(), true];
    const first = tail[0][0];
    const kept = curve.filter((p) => p[0] < first && isFixed(p, fromMs));
    const joined = first === fromMs || (kept.length > 0 && first - kept[kept.length - 1][0] <= STEP_MS);
    if (!joined) return [tail.slice(), false];
    return [kept.concat(tail), true];
  }
  function cleanCurve(points) {
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

  const chart = {
    curve: null, // the day's curve from the state; null = the server sends none (sampled)
    fromMs: 0, // the window's start: points before it are the day before this replay
    labels: [], // text drawn on the canvas, [{text, x, y, w, h}] in CSS px (for tests)
    ts: [], // ms since midnight, ascending
    vs: [], // cumulative fen
    last: [], // last year's [ms, fen], ascending
    ymaxTarget: 0, // fen; grows with the data, never shrinks within a run
    ymax: 0, // shown (eased toward the target)
    dirty: true,
    drawnNow: 0,
    drawnLast: 0,

    reset() {
      this.curve = null;
      this.fromMs = 0;
      this.ts.length = 0;
      this.vs.length = 0;
      this.ymaxTarget = 0;
      this.ymax = 0;
      this.dirty = true;
    },
    setLastYear(points) {
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
      this.curve = curve;
      this.fromMs = fromMs;
      this.ts.length = 0;
      this.vs.length = 0;
      for (const p of curve) {
        this.ts.push(p[0]);
        this.vs.push(p[1]);
      }
      const last = curve[curve.length - 1];
      if (last) this.grow(last[1], last[0]);
      this.dirty = true;
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
      this.dirty = true;
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

    // The whole chart, on an offscreen layer, when data, axis or size changed (at most
    // once per tick); `head` then only adds the live tip each frame.
    draw(headT, headV) {
      this.dirty = false;
      const c = el.chart;
      if (!c.cssW) return;
      const off = this.off || (this.off = document.createElement("canvas"));
      if (off.width !== c.width) off.width = c.width;
      if (off.height !== c.height) off.height = c.height;
      const ctx = off.getContext("2d");
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
        ctx.strokeStyle = v === 0 ? "rgba(255,255,255,0.22)" : "rgba(255,255,255,0.07)";
        ctx.beginPath();
        ctx.moveTo(L, y);
        ctx.lineTo(L + pw, y);
        ctx.stroke();
        ctx.fillStyle = "#a3a9bd";
        label(fmtMoneyCompact(v, true), L - 6 * dpr, Math.max(y, T - 1 + fs / 2));
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (let h = 0; h <= 24; h += pw / dpr > 420 ? 3 : 6) {
        const x = Math.round(X(h * 3600000)) + 0.5;
        ctx.strokeStyle = "rgba(255,255,255,0.05)";
        ctx.beginPath();
        ctx.moveTo(x, T);
        ctx.lineTo(x, T + ph);
        ctx.stroke();
        ctx.fillStyle = "#a3a9bd";
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
        ctx.strokeStyle = "rgba(160,168,196,0.75)";
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
      this.grad = ctx.createLinearGradient(0, T, 0, T + ph);
      this.grad.addColorStop(0, "rgba(255,90,31,0.35)");
      this.grad.addColorStop(1, "rgba(255,90,31,0.02)");
      this.tail = null;
      if (n > 0) {
        // up to the last point before the live head (the head moves every frame)
        let i = 1;
        ctx.beginPath();
        ctx.moveTo(X(ts[0]), Y(vs[0]));
        for (; i < n && ts[i] < headT && vs[i] <= headV; i++) {
          ctx.lineTo(X(ts[i]), Y(vs[i]));
          this.drawnNow++;
        }
        this.tail = [ts[i - 1], vs[i - 1]];
        ctx.save();
        ctx.lineTo(X(ts[i - 1]), T + ph);
        ctx.lineTo(X(ts[0]), T + ph);
        ctx.closePath();
        ctx.fillStyle = this.grad;
        ctx.fill();
        ctx.restore();
        ctx.strokeStyle = ACCENT;
        ctx.lineWidth = 2.6 * dpr;
        ctx.lineJoin = "round";
        ctx.stroke();

        // the day before this replay's window (it came with the curve), dimmed
        const from = this.fromMs;
        if (from > 0 && ts[0] < from) {
          const xf = Math.round(X(from)) + 0.5;
          ctx.fillStyle = "rgba(16,18,28,0.55)";
          ctx.fillRect(L, T - 2 * dpr, xf - L, ph + 2 * dpr);
          ctx.setLineDash([3 * dpr, 3 * dpr]);
          ctx.strokeStyle = "rgba(255,193,94,0.7)";
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
          ctx.strokeStyle = GOLD;
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
        ctx.fillStyle = GOLD;
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
      ctx.fillStyle = "rgba(8,10,18,0.92)";
      ctx.strokeStyle = "rgba(255,255,255,0.14)";
      ctx.lineWidth = Math.max(1, dpr);
      ctx.beginPath();
      ctx.rect(x + 0.5, y + 0.5, w, h);
      ctx.fill();
      ctx.stroke();
      ctx.font = "600 " + Math.round(fs * 0.9) + "px " + layout.font;
      ctx.fillStyle = "#a3a9bd";
      ctx.textBaseline = "top";
      ctx.textAlign = "left";
      label("zoom " + fmtClock(t0).slice(0, 5) + "–" + fmtClock(t1).slice(0, 5), x + pad * 0.6, y + pad * 0.4);
      ctx.textAlign = "right";
      label(fmtMoneyCompact(top, true), x + w - pad * 0.6, y + pad * 0.4);
      ctx.beginPath();
      ctx.rect(x + 1, y + 1, w - 2, h - 2);
      ctx.clip();
      ctx.setLineDash([5 * dpr, 4 * dpr]);
      ctx.strokeStyle = "rgba(160,168,196,0.75)";
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
      ctx.strokeStyle = ACCENT;
      ctx.lineWidth = 2.2 * dpr;
      ctx.lineJoin = "round";
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(X(headT), Y(headV), 3 * dpr, 0, Math.PI * 2);
      ctx.fillStyle = "#fff";
      ctx.fill();
      ctx.restore();
    },

    // Each frame: the offscreen layer, then the segment to the live head and its dot.
    head(headT, headV) {
      const c = el.chart;
      if (!this.off || !this.geo || !c.cssW) return;
      const ctx = c.getContext("2d");
      ctx.clearRect(0, 0, c.width, c.height);
      ctx.drawImage(this.off, 0, 0);
      if (!this.tail) return;
      const { X, Y, T, ph, L, pw, dpr } = this.geo;
      const [t0, v0] = this.tail;
      const x0 = X(t0), y0 = Y(v0), hx = X(headT), hy = Math.max(T, Y(headV));
      ctx.save();
      ctx.beginPath();
      ctx.rect(L, T - 8 * dpr, pw + 8 * dpr, ph + 8 * dpr);
      ctx.clip();
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(hx, hy);
      ctx.lineTo(hx, T + ph);
      ctx.lineTo(x0, T + ph);
      ctx.closePath();
      ctx.fillStyle = this.grad;
      ctx.fill();
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(hx, hy);
      ctx.strokeStyle = ACCENT;
      ctx.lineWidth = 2.6 * dpr;
      ctx.lineCap = "round";
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(hx, hy, 7 * dpr, 0, Math.PI * 2);
      ctx.fillStyle = "rgba(255,193,94,0.25)";
      ctx.fill();
      ctx.beginPath();
      ctx.arc(hx, hy, 3.4 * dpr, 0, Math.PI * 2);
      ctx.fillStyle = "#fff";
      ctx.fill();
      ctx.restore();
      this.drawnHead = 1;
    },
  };

  // ---------------------------------------------------------------- map

  const GEO = window.TICKER_GEO || { LAND: [], WATER: [], HOME: [], SELLERS: {}, BUYERS: {} };
  const MAP = { lon0: -25, lonSpan: 330, latTop: 72, latBottom: -50, kx: Math.cos((25 * Math.PI) / 180) };
  const proj = { s: 1, ox: 0, oy: 0 };
  const normLon = (lon) => (lon < MAP.lon0 ? lon + 360 : lon);

  // The stretch t0..t1 (0 = seller, 1 = buyer) of an arc's quadratic Bezier, in `steps` segments.
  function strokeArc(ctx, a, t0, t1, steps) {
    ctx.beginPath();
    for (let i = 0; i <= steps; i++) {
      const t = t0 + ((t1 - t0) * i) / steps;
      const u = 1 - t;
      const x = u * u * a.x0 + 2 * u * t * a.cx + t * t * a.x1;
      const y = u * u * a.y0 + 2 * u * t * a.cy + t * t * a.y1;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    }
    ctx.stroke();
  }

  function project(lon, lat) {
    return [
      proj.ox + (normLon(lon) - MAP.lon0) * MAP.kx * proj.s,
      proj.oy + (MAP.latTop - lat) * proj.s,
    ];
  }

  // Rings normalised to the map's longitude window, with bounding boxes.
  function prepRings(rings) {
    return rings.map((ring) => {
      const shift = ring[0][0] < MAP.lon0 ? 360 : 0;
      const pts = ring.map(([x, y]) => [x + shift, y]);
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const [x, y] of pts) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      return { pts, x0, x1, y0, y1 };
    });
  }
  const landRings = prepRings(GEO.LAND);
  const waterRings = prepRings(GEO.WATER);
  const homeRings = prepRings(GEO.HOME);

  function inRings(rings, x, y) {
    for (const r of rings) {
      if (x < r.x0 || x > r.x1 || y < r.y0 || y > r.y1) continue;
      let inside = false;
      const p = r.pts;
      for (let i = 0, j = p.length - 1; i < p.length; j = i++) {
        if ((p[i][1] > y) !== (p[j][1] > y) &&
            x < ((p[j][0] - p[i][0]) * (y - p[i][1])) / (p[j][1] - p[i][1]) + p[i][0]) inside = !inside;
      }
      if (inside) return true;
    }
    return false;
  }

  const map = {
    arcs: [], // pool of arc objects (reused), at most MAX_ARCS
    active: 0,
    peak: 0, // most arcs ever on screen at once (for tests)
    queue: [], // orders waiting for an arc
    seen: new Set(), // keys of recent sample orders (bounded)
    seenOrder: [],
    lastSpawn: 0,
    lastFeed: 0,
    launched: [], // newest first, for the text feed
    feedDirty: false,
    pulses: new Map(), // seller name -> last launch time

    drawBase() {
      const c = el.mapBase;
      if (!c.cssW) return;
      const a = el.mapArcs;
      fitCanvas(a, c.cssW, c.cssH);
      const W = c.width;
      const H = c.height;
      const dpr = W / Math.max(1, c.cssW);
      const spanX = MAP.lonSpan * MAP.kx;
      const spanY = MAP.latTop - MAP.latBottom;
      proj.s = Math.min(W / spanX, H / spanY);
      proj.ox = (W - spanX * proj.s) / 2;
      proj.oy = (H - spanY * proj.s) / 2;
      const ctx = c.getContext("2d");
      ctx.clearRect(0, 0, W, H);

      // dot grid: about one dot per 6 CSS px, 90-260 columns
      const cols = Math.max(90, Math.min(260, Math.round(W / dpr / 5.5)));
      const stepDeg = MAP.lonSpan / cols;
      const stepPx = stepDeg * MAP.kx * proj.s;
      const r = Math.max(0.8 * dpr, stepPx * 0.3);
      ctx.fillStyle = "#2a3150";
      const home = [];
      for (let lat = MAP.latTop - stepDeg / 2; lat > MAP.latBottom; lat -= stepDeg / MAP.kx) {
        for (let lon = MAP.lon0 + stepDeg / 2; lon < MAP.lon0 + MAP.lonSpan; lon += stepDeg) {
          if (!inRings(landRings, lon, lat) || inRings(waterRings, lon, lat)) continue;
          const [x, y] = project(lon, lat);
          if (inRings(homeRings, lon, lat)) {
            home.push(x, y);
            continue;
          }
          ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
        }
      }
      // the home market, glowing
      if (home.length) {
        const [cx, cy] = project(104, 34);
        const glow = ctx.createRadialGradient(cx, cy, 0, cx, cy, 30 * proj.s);
        glow.addColorStop(0, "rgba(255,90,31,0.20)");
        glow.addColorStop(1, "rgba(255,90,31,0)");
        ctx.fillStyle = glow;
        ctx.fillRect(cx - 30 * proj.s, cy - 30 * proj.s, 60 * proj.s, 60 * proj.s);
        ctx.fillStyle = "rgba(255,110,50,0.8)";
        for (let i = 0; i < home.length; i += 2) ctx.fillRect(home[i] - r, home[i + 1] - r, 2 * r, 2 * r);
      }

      // seller countries
      const fs = Math.max(9 * dpr, Math.round(layout.rootPx * 0.62 * dpr));
      ctx.font = "600 " + fs + "px " + layout.font;
      ctx.textBaseline = "middle";
      for (const [name, p] of Object.entries(GEO.SELLERS)) {
        if (name === "China" || name === "South Korea") continue;
        const [x, y] = project(p[0], p[1]);
        ctx.fillStyle = "rgba(90,209,255,0.9)";
        ctx.beginPath();
        ctx.arc(x, y, 2.2 * dpr, 0, Math.PI * 2);
        ctx.fill();
        if (p[2] && W / dpr > 360) {
          ctx.fillStyle = "rgba(200,225,245,0.75)";
          ctx.textAlign = p[0] > 140 || p[0] < -60 ? "left" : "right";
          const dx = ctx.textAlign === "left" ? 5 * dpr : -5 * dpr;
          ctx.fillText(p[2], x + dx, y);
        }
      }
      if (GEO.EUROPE_LABEL && W / dpr > 360) {
        const [x, y] = project(GEO.EUROPE_LABEL[0], GEO.EUROPE_LABEL[1] + 9);
        ctx.fillStyle = "rgba(200,225,245,0.75)";
        ctx.textAlign = "center";
        ctx.fillText(GEO.EUROPE_LABEL[2], x, y);
      }
    },

    // Arcs hold pixel positions, so a resize drops them (the text feed stays).
    clearArcs() {
      for (const a of this.arcs) a.on = false;
      this.active = 0;
      const c = el.mapArcs;
      c.getContext("2d").clearRect(0, 0, c.width, c.height);
    },
    clear() {
      this.clearArcs();
      this.queue.length = 0;
      this.launched.length = 0;
      this.feedDirty = true;
    },

    // The latest orders, listed at once without arcs (a page that joins late).
    prime(samples) {
      if (!Array.isArray(samples)) return;
      const list = samples.filter((o) => o && typeof o === "object");
      for (const o of list) {
        const key = o.at_ms + "|" + o.amt_fen + "|" + o.seller + "|" + o.buyer;
        if (this.seen.has(key)) continue;
        this.seen.add(key);
        this.seenOrder.push(key);
        if (this.seenOrder.length > 256) this.seen.delete(this.seenOrder.shift());
      }
      this.launched.length = 0;
      this.launched.push(...list.slice(-FEED_ROWS).reverse());
      this.feedDirty = true;
      kick();
    },

    // Queue the sample orders not seen before.
    offer(samples) {
      if (!Array.isArray(samples)) return;
      for (const o of samples) {
        if (!o || typeof o !== "object") continue;
        const key = o.at_ms + "|" + o.amt_fen + "|" + o.seller + "|" + o.buyer;
        if (this.seen.has(key)) continue;
        this.seen.add(key);
        this.seenOrder.push(key);
        if (this.seenOrder.length > 256) this.seen.delete(this.seenOrder.shift());
        this.queue.push(o);
        if (this.queue.length > ARC_QUEUE) this.queue.shift();
      }
      if (this.queue.length) kick();
    },

    place(name, table, fallback) {
      const p = table[name] || (table === GEO.BUYERS ? GEO.SELLERS[name] : GEO.BUYERS[name]);
      if (p) return [p[0], p[1]];
      if (!fallback) return null;
      // Unknown buyer region: somewhere in eastern China, stable per name.
      const h = hash01(String(name));
      return [108 + h * 12, 24 + ((h * 7) % 1) * 14];
    },

    spawn(o, now) {
      const from = this.place(String(o.seller), GEO.SELLERS, false);
      const to = this.place(String(o.buyer), GEO.BUYERS, true);
      this.launched.unshift(o);
      if (this.launched.length > FEED_ROWS) this.launched.length = FEED_ROWS;
      this.feedDirty = true;
      if (!from || this.active >= MAX_ARCS) return;
      let a = this.arcs.find((x) => !x.on);
      if (!a) {
        if (this.arcs.length >= MAX_ARCS) return;
        a = { on: false };
        this.arcs.push(a);
      }
      const [x0, y0] = project(from[0], from[1]);
      const [x1, y1] = project(to[0], to[1]);
      const dx = x1 - x0;
      const dy = y1 - y0;
      const d = Math.hypot(dx, dy) || 1;
      const lift = Math.min(d * 0.35, 60 * proj.s);
      a.x0 = x0; a.y0 = y0; a.x1 = x1; a.y1 = y1;
      // control point lifted "north" of the chord
      const nx = dy / d;
      const ny = -dx / d;
      const sign = ny < 0 ? 1 : -1;
      a.cx = (x0 + x1) / 2 + nx * lift * sign;
      a.cy = (y0 + y1) / 2 + ny * lift * sign;
      const amt = Number(o.amt_fen) || 0;
      a.w = Math.min(3, 1 + Math.log10(1 + amt / 10000) * 0.9);
      a.born = now;
      a.on = true;
      this.active++;
      if (this.active > this.peak) this.peak = this.active;
      this.pulses.set(String(o.seller), now);
    },

    // Advance and draw the arcs; true while anything is on screen or queued.
    frame(now) {
      if (this.queue.length && now - this.lastSpawn >= ARC_SPACING_MS && !reducedMotion) {
        // one arc per ARC_SPACING_MS of wall time, even when frames come slowly
        let due = Math.min(8, Math.floor((now - this.lastSpawn) / ARC_SPACING_MS));
        while (due-- > 0 && this.queue.length) this.spawn(this.queue.shift(), now - due * ARC_SPACING_MS);
        this.lastSpawn = now;
      } else if (reducedMotion && this.queue.length) {
        const o = this.queue.pop();
        this.queue.length = 0;
        this.launched.unshift(o);
        if (this.launched.length > FEED_ROWS) this.launched.length = FEED_ROWS;
        this.feedDirty = true;
      }
      if (this.feedDirty && now - this.lastFeed >= FEED_EVERY_MS) {
        this.lastFeed = now;
        this.feedDirty = false;
        renderFeed(this.launched);
      }
      const c = el.mapArcs;
      const ctx = c.getContext("2d");
      if (this.active === 0 && !this.wasDrawn) return this.queue.length > 0 || this.feedDirty;
      ctx.clearRect(0, 0, c.width, c.height);
      const dpr = c.width / Math.max(1, c.cssW || 1);
      ctx.lineCap = "round";
      let on = 0;
      for (const a of this.arcs) {
        if (!a.on) continue;
        const age = now - a.born;
        if (age >= ARC_LIFE_MS) {
          a.on = false;
          continue;
        }
        on++;
        const p = Math.min(1, age / ARC_FLIGHT_MS);
        const head = 1 - (1 - p) * (1 - p); // ease-out flight
        const fade = age < ARC_FLIGHT_MS ? 1 : 1 - (age - ARC_FLIGHT_MS) / (ARC_LIFE_MS - ARC_FLIGHT_MS);
        // faint full trail
        const N = 18;
        ctx.lineWidth = a.w * dpr * 0.8;
        ctx.strokeStyle = "rgba(255,120,60," + (0.28 * fade).toFixed(3) + ")";
        strokeArc(ctx, a, 0, head, N);
        // bright comet near the head
        if (p < 1) {
          const t0 = Math.max(0, head - 0.22);
          ctx.lineWidth = a.w * dpr * 1.5;
          ctx.strokeStyle = GOLD;
          strokeArc(ctx, a, t0, head, 6);
        } else {
          // landing ring
          const k = (age - ARC_FLIGHT_MS) / (ARC_LIFE_MS - ARC_FLIGHT_MS);
          ctx.strokeStyle = "rgba(255,193,94," + (0.9 * (1 - k)).toFixed(3) + ")";
          ctx.lineWidth = 1.4 * dpr;
          ctx.beginPath();
          ctx.arc(a.x1, a.y1, (2 + 9 * k) * dpr, 0, Math.PI * 2);
          ctx.stroke();
        }
      }
      this.active = on;
      this.wasDrawn = on > 0;
      return on > 0 || this.queue.length > 0 || this.feedDirty;
    },
  };

  // ---------------------------------------------------------------- latest orders feed

  const feedRows = [];
  function renderFeed(list) {
    for (let i = 0; i < FEED_ROWS; i++) {
      const o = list[i];
      let row = feedRows[i];
      if (!o) {
        if (row && row.li.isConnected) row.li.remove();
        continue;
      }
      if (!row) {
        const li = document.createElement("li");
        const time = document.createElement("span");
        time.className = "feed-time";
        const route = document.createElement("span");
        route.className = "feed-route";
        const seller = document.createElement("b");
        const buyer = document.createElement("span");
        route.append(seller, " → ", buyer);
        const amt = document.createElement("span");
        amt.className = "feed-amt";
        li.append(time, route, amt);
        row = feedRows[i] = { li, time, seller, buyer, amt };
      }
      setText(row.time, fmtClock(o.at_ms));
      setText(row.seller, String(o.seller ?? "?"));
      setText(row.buyer, String(o.buyer ?? "?"));
      setText(row.amt, fmtMoney(o.amt_fen));
      if (!row.li.isConnected) el.feed.append(row.li);
    }
    fitFeed();
  }

  // ---------------------------------------------------------------- top lists
  // Ten reused rows per list, keyed by name. The DOM order follows the ranking; when it
  // changes, each row slides from where it was (FLIP: measure, reorder, invert, play).

  class BarList {
    constructor(ol) {
      this.ol = ol;
      this.rows = [];
      this.items = [];
      this.order = "";
      for (let i = 0; i < TOP_N; i++) this.rows.push(this.makeRow());
    }
    makeRow() {
      const li = document.createElement("li");
      li.className = "bar-row";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.setAttribute("aria-hidden", "true");
      const rank = document.createElement("span");
      rank.className = "bar-rank";
      const name = document.createElement("span");
      name.className = "bar-name";
      const amount = document.createElement("span");
      amount.className = "bar-amount";
      li.append(fill, rank, name, amount);
      return { li, fill, rank, name, amount, key: null };
    }
    render(items) {
      this.items = Array.isArray(items) ? items.slice(0, TOP_N) : [];
      const list = this.items;
      const order = list.map((it) => String(it.name ?? "")).join("\u0000");
      const reorder = order !== this.order;
      this.order = order;

      // First: where the rows are now (only when the ranking changed).
      const before = new Map();
      const animate = reorder && !reducedMotion && this.ol.offsetParent !== null;
      if (animate) for (const r of this.rows) if (r.li.isConnected) before.set(r, r.li.getBoundingClientRect().top);

      // Give each item its row: the same row as before when the name is already shown.
      const byKey = new Map(this.rows.filter((r) => r.key !== null).map((r) => [r.key, r]));
      const names = new Set(list.map((it) => String(it.name ?? "")));
      const free = this.rows.filter((r) => r.key === null || !names.has(r.key));
      const assigned = list.map((it) => {
        const nm = String(it.name ?? "");
        let r = byKey.get(nm);
        if (!r) {
          r = free.shift();
          r.key = nm;
          r.fresh = true;
        }
        return r;
      });
      for (const r of free) {
        r.key = null;
        if (r.li.isConnected) r.li.remove();
      }

      let max = 0;
      for (const it of list) max = Math.max(max, Number(it.gmv_fen) || 0);
      assigned.forEach((r, i) => {
        const it = list[i];
        const fen = Number(it.gmv_fen) || 0;
        setText(r.rank, String(i + 1));
        setText(r.name, r.key);
        setText(r.amount, fmtMoneyCompact(fen));
        if (r.li.dataset.name !== r.key) r.li.dataset.name = r.key;
        r.li.title = r.key + ": " + fmtMoney(fen) + " · " + fmtInt(it.orders) + " orders";
        r.fill.style.transform = "scaleX(" + (max > 0 ? Math.max(0.004, fen / max) : 0).toFixed(4) + ")";
        if (this.ol.children[i] !== r.li) this.ol.insertBefore(r.li, this.ol.children[i] || null);
      });

      // Last, invert, play.
      if (!animate) {
        for (const r of assigned) r.fresh = false;
        return;
      }
      const moved = [];
      for (const r of assigned) {
        if (r.fresh) {
          r.fresh = false;
          r.li.classList.remove("entering");
          void r.li.offsetWidth;
          r.li.classList.add("entering");
          continue;
        }
        const top0 = before.get(r);
        if (top0 === undefined) continue;
        const dy = top0 - r.li.getBoundingClientRect().top;
        if (Math.abs(dy) < 0.5) continue;
        r.li.style.transition = "none";
        r.li.style.transform = "translateY(" + dy.toFixed(1) + "px)";
        moved.push(r.li);
      }
      if (moved.length) {
        void this.ol.offsetHeight;
        for (const li of moved) {
          li.style.transition = "transform 0.6s cubic-bezier(0.2, 0.8, 0.2, 1)";
          li.style.transform = "";
        }
      }
    }
    rerender() {
      this.order = "";
      this.render(this.items);
    }
  }

  const categories = new BarList(el.topCategories);
  const countries = new BarList(el.topCountries);

  // ---------------------------------------------------------------- milestones

  const fired = new Map(); // id -> { m, li }
  const upcomingRows = new Map(); // id -> li
  const bannerQueue = [];
  let bannerBusy = false;
  let bannerTimer = 0;

  function docCell(m, replayedMs) {
    const doc = document.createElement("span");
    doc.className = "ms-doc";
    if (m.documented) {
      doc.append(document.createTextNode(String(m.documented)));
      const docMs = parseClock(m.documented);
      if (replayedMs != null && docMs != null) {
        const delta = document.createElement("span");
        delta.className = "ms-delta";
        const d = replayedMs - docMs;
        delta.dataset.sign = Math.abs(d) < 1000 ? "on" : d < 0 ? "early" : "late";
        delta.textContent = fmtDelta(d);
        doc.append(delta);
      }
    }
    return doc;
  }

  // A fired milestone; `before` = one the window's base had already passed (a replay from
  // mid-day starts above it): listed first, marked, with its documented time.
  function addMilestone(m, announce, before) {
    if (!m || m.id == null) return;
    const id = String(m.id);
    const key = before ? "before:" + id : id;
    if (fired.has(key) || (before && fired.has(id))) return;
    const li = document.createElement("li");
    const time = document.createElement("span");
    time.className = "ms-time";
    const label = document.createElement("span");
    label.className = "ms-label";
    label.textContent = msLabel(m);
    let order;
    if (before) {
      const from = fmtClock(Number(state && state.from_ms) || 0).slice(0, 5);
      li.dataset.beforeId = id;
      li.classList.add("before");
      time.textContent = "before " + from;
      li.append(time, label, docCell(m, null));
      li.title = msLabel(m) + ": passed before this replay's window (from " + from + ")" +
        (m.documented ? ", documented " + m.documented : "");
      order = -DAY_MS + (parseClock(m.documented) ?? 0) + (Number(m.threshold) || 0) / 1e15;
    } else {
      li.dataset.id = id;
      time.textContent = milestoneClock(m);
      const replayedMs = Number.isFinite(Number(m.sim_time_ms)) ? Number(m.sim_time_ms) : parseClock(m.sim_time);
      li.append(time, label, docCell(m, replayedMs));
      li.title =
        msLabel(m) + ": replayed " + (m.sim_time || fmtClock(m.sim_time_ms)) +
        (m.documented ? ", documented " + m.documented : "");
      order = Number(m.sim_time_ms) || 0;
    }
    fired.set(key, { m, li, label, order, before: !!before });

    // keep the list in firing (replayed time) order, those before the window first
    const ordered = [...fired.values()].sort((a, b) => a.order - b.order);
    const next = ordered[ordered.findIndex((x) => x.li === li) + 1];
    el.milestones.insertBefore(li, next ? next.li : null);
    el.milestonesEmpty.hidden = true;
    const up = upcomingRows.get(id);
    if (up) {
      up.remove();
      upcomingRows.delete(id);
    }
    chart.dirty = true;
    fitMilestonesSoon();

    if (announce) {
      li.classList.add("fresh");
      bannerQueue.push(m);
      showNextBanner();
    }
  }

  // Labels again in the shown currency (amounts in labels follow it).
  function relabelMilestones() {
    for (const { m, label } of fired.values()) setText(label, msLabel(m));
    for (const [, li] of upcomingRows) if (li.m) setText(li.querySelector(".ms-label"), msLabel(li.m));
  }

  // On the one-screen layout the milestone panel has a fixed height: rows that do not fit
  // are left out whole (upcoming ones last first, then the oldest fired), never cut.
  const oneScreen = window.matchMedia
    ? matchMedia("(min-width: 1100px) and (min-height: 560px) and (orientation: landscape)")
    : { matches: false };
  let fitTimer = 0;
  function fitMilestonesSoon() {
    if (!fitTimer) fitTimer = setTimeout(fitMilestones, 50);
  }
  function fitMilestones() {
    fitTimer = 0;
    const fixed = [...fired.values()].sort((a, b) => b.order - a.order).map((x) => x.li);
    const rows = fixed.concat([...el.upcoming.children]);
    for (const li of rows) li.hidden = false;
    if (!oneScreen.matches) return;
    const panel = el.msPanel;
    const keep = Math.min(2, fixed.length); // the newest two always show
    for (let i = rows.length - 1; i >= keep && panel.scrollHeight > panel.clientHeight + 1; i--) {
      // never leave out a fired one while an upcoming one shows
      rows[i].hidden = true;
    }
    const hiddenFixed = () => fixed.filter((li) => li.hidden);
    if (fixed.length === 0) return;
    el.milestonesEmpty.hidden = hiddenFixed().length === 0;
    setText(el.milestonesEmpty, "+" + hiddenFixed().length + " earlier");
    // the note takes a line: make room for it too
    const shown = fixed.filter((li) => !li.hidden);
    while (!el.milestonesEmpty.hidden && shown.length > 1 && panel.scrollHeight > panel.clientHeight + 1) {
      shown.pop().hidden = true;
      setText(el.milestonesEmpty, "+" + hiddenFixed().length + " earlier");
    }
  }

  function fitFeed() {
    const rows = [...el.feed.children];
    for (const li of rows) li.hidden = false;
    if (!oneScreen.matches) return;
    for (let i = rows.length - 1; i >= 1 && el.feed.scrollHeight > el.feed.clientHeight + 1; i--) rows[i].hidden = true;
  }

  function renderUpcoming(list) {
    const want = new Set();
    let i = 0;
    for (const m of Array.isArray(list) ? list : []) {
      if (!m || m.id == null) continue;
      const id = String(m.id);
      if (fired.has(id)) continue;
      want.add(id);
      let li = upcomingRows.get(id);
      if (!li) {
        li = document.createElement("li");
        li.dataset.upcoming = id;
        const time = document.createElement("span");
        time.className = "ms-time";
        time.textContent = "--:--:--";
        const label = document.createElement("span");
        label.className = "ms-label";
        label.textContent = msLabel(m);
        li.append(time, label, docCell(m, null));
        upcomingRows.set(id, li);
      }
      li.m = m;
      if (el.upcoming.children[i] !== li) el.upcoming.insertBefore(li, el.upcoming.children[i] || null);
      i++;
    }
    for (const [id, li] of upcomingRows) {
      if (!want.has(id)) {
        li.remove();
        upcomingRows.delete(id);
      }
    }
    fitMilestonesSoon();
  }

  function clearMilestones() {
    for (const { li } of fired.values()) li.remove();
    fired.clear();
    for (const li of upcomingRows.values()) li.remove();
    upcomingRows.clear();
    el.milestonesEmpty.hidden = false;
    setText(el.milestonesEmpty, "None yet");
    bannerQueue.length = 0;
    clearTimeout(bannerTimer);
    bannerBusy = false;
    el.banner.classList.remove("show");
    el.banner.hidden = true;
  }

  function showNextBanner() {
    if (bannerBusy || bannerQueue.length === 0) return;
    const m = bannerQueue.shift();
    bannerBusy = true;
    const text = msLabel(m) + " at " + milestoneClock(m);
    setText(el.bannerText, text);
    setText(el.bannerDoc, m.documented ? "documented " + m.documented : "");
    el.banner.dataset.id = String(m.id);
    // the strip slides down over the top bar; match its height
    if (el.header) el.banner.style.minHeight = el.header.offsetHeight + "px";
    el.banner.hidden = false;
    // force a style flush so the fade-in transition runs from the hidden state
    void el.banner.offsetWidth;
    el.banner.classList.add("show");
    el.announcer.textContent = "";
    el.announcer.textContent =
      "Milestone: " + text + " festival time" + (m.documented ? ", documented " + m.documented : "") + ".";
    const hold = bannerQueue.length > 0 ? BANNER_MS_BUSY : BANNER_MS;
    bannerTimer = setTimeout(() => {
      el.banner.classList.remove("show");
      bannerTimer = setTimeout(() => {
        bannerBusy = false;
        if (bannerQueue.length) showNextBanner();
        else el.banner.hidden = true;
      }, BANNER_FADE_MS);
    }, hold);
  }

  // ---------------------------------------------------------------- meters

  const peaks = { gmv: 0, gmvAt: 0, orders: 0, ordersAt: 0 };
  function renderMeter(fill, mark, value, peak) {
    const scale = niceCeil(peak) || 1;
    fill.style.transform = "scaleX(" + Math.min(1, Math.max(0, value / scale)).toFixed(4) + ")";
    mark.style.opacity = peak > 0 ? "1" : "0";
    mark.style.left = (Math.min(1, peak / scale) * 100).toFixed(2) + "%";
  }
  function renderRates() {
    const s = state || {};
    // After the end (or while paused) there is no rate: the tiles say so, and the peaks
    // stay in the meters.
    const over = s.ended === true;
    const windowOver = over && Number(s.to_ms) > 0 && Number(s.to_ms) < DAY_MS;
    const still = over ? (windowOver ? "ended" : "day over") : state && replayState() === "paused" ? "paused" : "";
    const g = still ? 0 : Number(s.gmv_fen_per_s) || 0;
    const o = still ? 0 : Number(s.orders_per_s) || 0;
    setText(el.rateGmv, still || fmtMoney(g));
    setText(el.rateOrders, still || fmtInt(o));
    for (const n of [el.rateGmv, el.rateOrders]) {
      if (n.parentNode.dataset.over !== String(!!still)) n.parentNode.dataset.over = String(!!still);
    }
    renderMeter(el.meterGmv, el.meterGmvPeak, g, peaks.gmv);
    renderMeter(el.meterOrders, el.meterOrdersPeak, o, peaks.orders);
    el.meterGmv.parentNode.title = peaks.gmv ? "peak " + fmtMoney(peaks.gmv) + "/s at " + fmtClock(peaks.gmvAt) : "";
    el.meterOrders.parentNode.title = peaks.orders ? "peak " + fmtInt(peaks.orders) + "/s at " + fmtClock(peaks.ordersAt) : "";
  }

  // ---------------------------------------------------------------- animation loop

  function frame(now) {
    rafId = 0;
    const dt = lastFrameAt ? Math.min(now - lastFrameAt, 1000) : 16;
    lastFrameAt = now;
    let moving = false;
    for (const c of counters) moving = c.step(dt) || moving;
    if (moving && performance.now() - lastTickAt > STALL_MS) {
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

  function kick() {
    if (!rafId) rafId = requestAnimationFrame(frame);
  }

  function settleAll() {
    for (const c of counters) c.settle();
    chart.dirty = true;
    kick();
    checkEnded();
  }

  function checkEnded() {
    const settled = gmv.shown >= gmv.target && orders.shown >= orders.target;
    if (state && state.ended === true && settled) {
      if (document.body.dataset.ended !== "true") document.body.dataset.ended = "true";
    } else if (document.body.dataset.ended) {
      delete document.body.dataset.ended;
    }
  }

  // ---------------------------------------------------------------- currency

  function setCurrency(cur, remember) {
    currency = cur === "USD" && usdRate > 0 ? "USD" : "RMB";
    el.curRmb.setAttribute("aria-pressed", String(currency === "RMB"));
    el.curUsd.setAttribute("aria-pressed", String(currency === "USD"));
    document.body.dataset.currency = currency;
    if (remember) {
      try {
        localStorage.setItem("ticker.currency", cur);
      } catch (e) {
        /* storage may be unavailable */
      }
    }
    gmv.render();
    renderRates();
    categories.rerender();
    countries.rerender();
    map.feedDirty = true;
    chart.dirty = true;
    if (state) {
      renderContext();
      renderHeadline();
      relabelMilestones();
    }
    kick();
  }

  el.curRmb.addEventListener("click", () => setCurrency("RMB", true));
  el.curUsd.addEventListener("click", () => setCurrency("USD", true));

  let wantedCurrency = "RMB";
  try {
    const q = new URLSearchParams(location.search).get("currency");
    wantedCurrency = (q || localStorage.getItem("ticker.currency") || "RMB").toUpperCase();
  } catch (e) {
    /* storage may be unavailable */
  }

  // ---------------------------------------------------------------- state

  let state = null; // latest merged state (also window.tickerState)
  let runKey = null; // identity of the replay the state belongs to
  let helloEpoch = null;
  let runEpoch = null; // epoch of the snapshot that started the current run

  // A replay is identified by `run`; when the server has no run id, its epoch.
  const identityOf = (run, epoch) => (run != null ? "run:" + run : "epoch:" + (epoch ?? helloEpoch ?? ""));

  function resetRun(key) {
    runKey = key;
    state = {};
    for (const c of counters) c.reset();
    clearMilestones();
    chart.reset();
    map.clear();
    peaks.gmv = peaks.orders = 0;
    delete document.body.dataset.ended;
  }

  // Merge a full (snapshot) or partial (tick) state into the current one.
  function applyState(partial, epoch, isSnapshot) {
    if (!partial || typeof partial !== "object") return;
    let fresh;
    if (state === null) fresh = true;
    else if (isSnapshot) fresh = identityOf(partial.run, epoch) !== runKey;
    else fresh = partial.run != null && partial.run !== state.run; // a tick naming another run
    if (fresh) {
      runEpoch = epoch;
      resetRun(identityOf(partial.run, epoch));
    }
    Object.assign(state, partial);
    window.tickerState = state;

    const now = performance.now();
    if (!isSnapshot) {
      if (lastTickAt) {
        const dt = Math.min(1000, Math.max(40, now - lastTickAt));
        tickIntervalMs = tickIntervalMs * 0.8 + dt * 0.2;
      }
    }
    lastTickAt = now;

    if ("usd_rate" in partial) {
      const r = parseFloat(partial.usd_rate);
      usdRate = Number.isFinite(r) && r > 0 ? r : 0;
      el.curUsd.disabled = usdRate <= 0;
      if (usdRate > 0 && wantedCurrency === "USD" && currency !== "USD") setCurrency("USD", false);
      if (usdRate <= 0 && currency === "USD") setCurrency("RMB", false);
      setText(el.usdNote, usdRate > 0 ? "US$1 = ¥" + partial.usd_rate : "");
    }
    if ("last_year_points" in partial) chart.setLastYear(partial.last_year_points);

    // Counters: a fresh run shows its values at once; otherwise animate on.
    const glide = tickIntervalMs * 1.15;
    if ("gmv_fen" in partial) gmv.push(partial.gmv_fen, glide);
    if ("orders" in partial) orders.push(partial.orders, glide);
    if (fresh || state.ended === true) settleAll();
    else kick();

    if (Array.isArray(partial.curve)) {
      const fromMs = Number(state.from_ms) || 0;
      const points = cleanCurve(partial.curve);
      if (isSnapshot) {
        chart.setCurve(points, fromMs);
      } else {
        const [curve, joined] = mergeTail(chart.curve || [], points, fromMs);
        chart.setCurve(curve, fromMs);
        if (fresh) refetchCurve(true); // a new run: the day before it, and its milestones
        else if (!joined) refetchCurve(false); // a minute or more went missing
      }
      state.curve = chart.curve;
    } else if (chart.curve === null && ("sim_time_ms" in partial || "gmv_fen" in partial)) {
      // a server without the day's curve: draw what arrives
      chart.fromMs = Number(state.from_ms) || 0;
      const t = Number(state.sim_time_ms);
      const v = Number(state.gmv_fen);
      if (Number.isFinite(t) && Number.isFinite(v) && (v > 0 || t > 0)) chart.sample(t, v);
    }
    if ("gmv_fen_per_s" in partial && Number(partial.gmv_fen_per_s) > peaks.gmv) {
      peaks.gmv = Number(partial.gmv_fen_per_s);
      peaks.gmvAt = state.sim_time_ms;
    }
    if ("orders_per_s" in partial && Number(partial.orders_per_s) > peaks.orders) {
      peaks.orders = Number(partial.orders_per_s);
      peaks.ordersAt = state.sim_time_ms;
    }
    if ("sample_orders" in partial) {
      // A page that joins late lists the latest orders at once; live ones fly as arcs.
      if (fresh) map.prime(partial.sample_orders);
      else map.offer(partial.sample_orders);
    }

    renderMeta(partial);

    if (Array.isArray(partial.before_window)) {
      for (const m of partial.before_window) addMilestone(m, false, true);
    }
    if (Array.isArray(partial.milestones)) {
      // History that came with a new run's first snapshot is listed, not announced.
      for (const m of partial.milestones) addMilestone(m, !fresh);
    }
    if ("upcoming" in partial) renderUpcoming(partial.upcoming);
    checkEnded();
  }

  // The whole curve again from /api/state, when a tail did not join what the page holds,
  // or when a tick starts a new run (a seek): ticks carry neither the day before the
  // window nor the milestones passed before it.
  let curveFetching = false;
  let curveFetchedAt = 0;
  async function refetchCurve(force, tries = 0) {
    const now = performance.now();
    if (curveFetching || (!force && now - curveFetchedAt < 1000)) return;
    curveFetching = true;
    curveFetchedAt = now;
    let retry = false;
    try {
      const resp = await fetch(new URL("api/state", location.href), {
        headers: feedToken ? { Authorization: "Bearer " + feedToken } : {},
        cache: "no-store",
        referrerPolicy: "no-referrer",
      });
      const s = resp.ok ? await resp.json() : null;
      if (s && state && s.run !== state.run) retry = true; // not there yet: ask again
      if (!s || !Array.isArray(s.curve) || !state || s.run !== state.run) return;
      if (Array.isArray(s.before_window)) for (const m of s.before_window) addMilestone(m, false, true);
      const fromMs = Number(s.from_ms) || 0;
      let curve = cleanCurve(s.curve);
      // What arrived meanwhile may be newer than what came back: fold it on top.
      const end = curve.length ? curve[curve.length - 1][0] : -1;
      const newer = (chart.curve || []).filter((p) => p[0] > end);
      if (newer.length) {
        const [merged, joined] = mergeTail(curve, newer, fromMs);
        if (joined) curve = merged;
      }
      chart.setCurve(curve, fromMs);
      state.curve = chart.curve;
      kick();
    } catch (e) {
      retry = force; // the next tail that does not join asks again anyway
    } finally {
      curveFetching = false;
    }
    // Disconnected: the snapshot that comes with the reconnection carries it all.
    if (retry && tries < 10) setTimeout(() => ws && refetchCurve(true, tries + 1), 500);
  }

  function renderMeta(partial) {
    const s = state;
    if ("title" in partial) {
      const t = String(s.title || "11.11 Global Shopping Festival");
      setText(el.title, t);
      document.title = t + " · live counter";
    }
    if ("scale" in partial) {
      const k = scaleOf();
      el.scale.hidden = k === 1;
      const text = k < 1 ? "1:" + fmtInt(Math.round(1 / k)) + " miniature" : k > 1 ? "×" + s.scale + " scale" : "";
      setText(el.scale, text);
      el.scale.title = k === 1 ? "" : "Every amount on this page is at " + text + " of the real day";
    }
    if ("sim_time_ms" in partial) {
      setText(el.clock, fmtClock(s.sim_time_ms));
      const frac = Math.max(0, Math.min(1, (Number(s.sim_time_ms) || 0) / DAY_MS));
      el.dayProgress.style.transform = "scaleX(" + frac.toFixed(5) + ")";
    }
    renderRates();
    if ("top_categories" in partial) categories.render(s.top_categories);
    if ("top_countries" in partial) countries.render(s.top_countries);
    renderBasis();
    renderHeadline();
    el.endedChip.hidden = s.ended !== true;
    renderReplay();
    renderContext();
    renderLive();
  }

  // A live event (`ticker live start`: profile "live") is not a replay of 11.11 in
  // Beijing: no festival mark, no replay chip, the event's own clock, no last-year key
  // without a last-year curve, and no RMB 100m brand line (a festival's yardstick).
  const liveText = new Map(); // element -> its text on the page as served
  function relabel(node, live, text) {
    if (!node) return;
    if (!liveText.has(node)) liveText.set(node, node.textContent);
    setText(node, live ? text : liveText.get(node));
  }
  function renderLive() {
    const live = state.profile === "live";
    if (document.body.dataset.live !== String(live)) document.body.dataset.live = String(live);
    const mark = document.querySelector(".brand-mark");
    if (mark) mark.hidden = live;
    relabel(el.clock.previousElementSibling.querySelector(".muted"), live, "event time");
    relabel(el.orders.previousElementSibling, live, "Orders");
    relabel(document.querySelector("#ms-label .muted"), live, "live");
    relabel(document.querySelector(".key-now"), live, "today");
    relabel(el.endedChip, live, "Event ended");
    const lastYear = document.querySelector(".key-last");
    if (lastYear) lastYear.hidden = !(state.last_year_points || []).length;
    el.brandsOver.parentElement.hidden = live;
  }

  // The window's base, [gmv_fen, orders] at its start (from the curve); null if unknown.
  function windowBase() {
    const from = Number(state.from_ms) || 0;
    if (from === 0) return [0, 0];
    const p = (chart.curve || []).find((q) => q[0] === from);
    return p ? [p[1], p[2]] : null;
  }

  // One basis, stated: counter and chart are cumulative from 00:00; the lists, brands and
  // shares (tallies of this replay's orders) count from the window's start.
  function renderBasis() {
    const from = Number(state.from_ms) || 0;
    const hhmm = fmtClock(from).slice(0, 5);
    const since = from > 0 ? "since " + hhmm : "";
    for (const n of el.since) {
      setText(n, since);
      n.hidden = !since;
    }
    el.basis.hidden = from === 0;
    setText(el.basis, from > 0
      ? "Replay from " + hhmm + " · counter and chart: totals from 00:00 · lists, brands and shares: since " + hhmm
      : "");
  }

  // The day's headline figures, on the counter's scale.
  function renderHeadline() {
    const s = state;
    setText(el.brandLine, fmtMoneyCompact(10000000000 * scaleOf(), true)); // RMB 100m, scaled
    setText(el.brandsOver, fmtInt(s.brands_over_100m || 0));
    const named = (Array.isArray(s.top_brands) ? s.top_brands : [])
      .map((b) => String((b && b.name) ?? ""))
      .filter((n) => n && !/^Brand \d+$/.test(n));
    setText(el.topBrands, named.join(" · ") || "–");
    el.topBrands.title = named.join(", ");
    // International share: cross-border orders (a seller abroad) among this window's orders.
    const base = windowBase();
    const windowOrders = base ? (Number(s.orders) || 0) - base[1] : 0;
    let cross = Number(s.cross_border_orders);
    const exact = Number.isFinite(cross);
    if (!exact) {
      // only the top ten sellers abroad are in the state: a lower bound
      cross = 0;
      for (const c of Array.isArray(s.top_countries) ? s.top_countries : []) cross += Number(c && c.orders) || 0;
    }
    setText(el.intlShare, windowOrders > 0 ? (exact ? "" : "≥") + ((cross / windowOrders) * 100).toFixed(1) + "%" : "–");
    el.intlShare.title = exact ? "" : "at least: from the ten largest seller countries abroad";
    const regions = s.buyer_regions_abroad == null ? NaN : Number(s.buyer_regions_abroad);
    el.regionsFigure.hidden = !Number.isFinite(regions);
    if (Number.isFinite(regions)) setText(el.regionsAbroad, fmtInt(regions));
  }

  // Lines under the counter: against last year, and the next milestone.
  function renderContext() {
    const s = state;
    const last = Number(s.last_year_gmv_fen) || 0;
    if (last > 0) {
      const atNow = chart.lastYearAt(Number(s.sim_time_ms) || 0);
      const pct = (gmv.target / last) * 100;
      let text = "Last year " + fmtMoneyCompact(last) + " · " +
        (pct >= 100 ? "beaten, +" + (pct - 100).toFixed(1) + "%" : pct.toFixed(1) + "% reached");
      if (atNow > 0 && gmv.target > 0 && s.ended !== true) {
        const ahead = (gmv.target / atNow - 1) * 100;
        text += " · " + (ahead >= 0 ? "+" : "") + ahead.toFixed(0) + "% vs same time";
      }
      setText(el.vsLastYear, text);
    } else {
      setText(el.vsLastYear, "");
    }
    // The first milestone not reached yet (a window replayed from mid-day starts above some).
    const reached = (m) => (m.metric === "orders" ? orders.target : gmv.target) >= Number(m.threshold);
    const up = Array.isArray(s.upcoming) ? s.upcoming.find((m) => m && !reached(m)) : null;
    if (up) {
      const have = up.metric === "orders" ? orders.target : gmv.target;
      const pct = up.threshold > 0 ? Math.min(99.9, (have / up.threshold) * 100) : 0;
      setText(el.nextMilestone, "Next: " + msLabel(up) + " · " + pct.toFixed(1) + "%");
    } else {
      setText(el.nextMilestone, s.ended ? "" : "All milestones reached");
    }
  }

  // ---------------------------------------------------------------- replay state + control

  // What the replay can do now: "running", "paused", "ended", "stopped" (it stopped
  // beating) or "none" (no replay reports). The day's end (state.ended) wins over a
  // replay status that has not caught up.
  function replayState() {
    if (!state) return "none";
    if (state.ended === true) return "ended";
    const r = state.replay;
    if (!r || typeof r !== "object") return "none";
    return ["running", "paused", "ended", "stopped"].includes(r.state) ? r.state : "none";
  }

  let ctlPending = false; // a command is on its way to the server
  let ctlAwait = null; // the replay state a sent command should lead to, and its message

  function renderReplay() {
    if (!state) return;
    const r = state.replay && typeof state.replay === "object" ? state.replay : {};
    const rs = replayState();
    const speed = r.speed == null ? "max speed" : fmtInt(r.speed) + "×";
    let text;
    if (rs === "paused") text = "❚❚ paused";
    else if (rs === "running") text = "▶ " + speed + (r.waiting ? " · waiting for the " + r.waiting : "");
    else if (rs === "ended") text = "■ replay ended";
    else text = "No replay running";
    setText(el.replayChip, text);
    if (el.replayChip.dataset.state !== rs) el.replayChip.dataset.state = rs;
    el.replayChip.title =
      rs === "running" || rs === "paused" ? "Replay " + rs + ", speed " + speed : text;
    // The "Replay ended" chip says it once the day is over.
    el.replayChip.hidden = (rs === "ended" && state.ended === true) || state.profile === "live";
    document.body.dataset.replay = rs;

    const obeys = rs === "running" || rs === "paused";
    const action = rs === "paused" ? "resume" : "pause";
    setText(el.ctlPause, action === "resume" ? "Resume" : "Pause");
    el.ctlPause.dataset.action = action;
    el.ctlPause.disabled = !obeys || ctlPending;
    el.ctlSpeed.disabled = !obeys || ctlPending;
    el.ctlSeek.disabled = !obeys;
    el.ctlSeekGo.disabled = !obeys || ctlPending;
    el.controls.dataset.replay = rs;
    if ("speed" in r && document.activeElement !== el.ctlSpeed) {
      const v = r.speed == null ? "max" : String(r.speed);
      if (![...el.ctlSpeed.options].some((o) => o.value === v)) {
        // a speed set elsewhere (`ticker control speed 3000`): show it as it is
        const o = document.createElement("option");
        o.value = v;
        o.textContent = fmtInt(Number(v)) + "×";
        el.ctlSpeed.insertBefore(o, [...el.ctlSpeed.options].find((x) => x.value === "max" || Number(x.value) > Number(v)) || null);
      }
      el.ctlSpeed.value = v;
    }
    if (ctlAwait && ctlAwait.done(r, rs)) {
      ctlMessage(ctlAwait.message, "ok");
      ctlAwait = null;
    }
    if (!obeys && token && !ctlPending && el.ctlMsg.dataset.kind !== "error") {
      ctlMessage(
        rs === "ended" ? "The replay has ended: start a new one to use these controls" : "No replay running",
        "idle",
      );
    } else if (obeys && el.ctlMsg.dataset.kind === "idle") {
      ctlMessage("", "");
    }
  }

  function ctlMessage(text, kind) {
    setText(el.ctlMsg, text);
    el.ctlMsg.dataset.kind = kind || "";
  }

  // What a command should lead to, seen in the replay's own state (not in the 202).
  function expectation(body) {
    const sp = (r) => (r.speed == null ? "max" : String(r.speed));
    switch (body.action) {
      case "pause":
        return { done: (r, rs) => rs === "paused", message: "Paused" };
      case "resume":
        return { done: (r, rs) => rs === "running", message: "Running" };
      case "speed":
        return { done: (r) => sp(r) === String(body.speed), message: "Speed " + (body.speed === "max" ? "max" : fmtInt(body.speed) + "×") };
      default:
        return { done: (r) => r.from_ms === parseClock(body.to), message: "Replaying from " + body.to };
    }
  }

  async function control(body) {
    ctlMessage("sending " + body.action + "…", "");
    ctlPending = true;
    ctlAwait = null;
    renderReplay();
    let resp;
    try {
      resp = await fetch(new URL("api/replay", location.href), {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
        body: JSON.stringify(body),
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      ctlMessage("Replay control unreachable: " + (e && e.message ? e.message : "network error"), "error");
      return false;
    } finally {
      ctlPending = false;
      renderReplay();
    }
    if (resp.ok) {
      // Accepted is not done: the replay says when it has obeyed (a `replay` message).
      ctlAwait = expectation(body);
      ctlMessage(body.action + " sent, waiting for the replay…", "");
      renderReplay();
      return true;
    }
    let detail = "";
    try {
      const j = await resp.json();
      detail = j && (j.message || j.error) ? String(j.message || j.error) : "";
    } catch (e) {
      /* not JSON */
    }
    const why = {
      401: "Not authorised (401): the server wants a control token",
      403: "Wrong control token (403): check ?token= in the address",
      404: "Replay control is not available on this server (404)",
      409: "Refused",
    }[resp.status] || "Replay control failed (HTTP " + resp.status + ")";
    ctlMessage(why + (detail ? ": " + detail : ""), "error");
    return false;
  }

  if (token) {
    el.controls.hidden = false;
    el.ctlPause.addEventListener("click", () => {
      control({ action: el.ctlPause.dataset.action === "resume" ? "resume" : "pause" });
    });
    el.ctlSpeed.addEventListener("change", () => {
      const v = el.ctlSpeed.value;
      control({ action: "speed", speed: v === "max" ? "max" : Number(v) });
    });
    el.controls.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const ms = parseClock(el.ctlSeek.value);
      if (ms === null) {
        ctlMessage("Seek takes a time of day such as 01:40:00", "error");
        return;
      }
      control({ action: "seek", to: fmtClock(ms) });
    });
  }

  // ---------------------------------------------------------------- connection

  let ws = null;
  let attempt = 0;
  let everConnected = false;
  let reconnectTimer = 0;
  let resumedTimer = 0;
  let lastPosition = null; // the newest feed position received
  let lastEpoch = ""; // the feed lifetime that position belongs to

  // Feed positions are Redis stream ids "ms-seq", optionally ".k" for the k-th of several
  // milestones of one commit (which sorts before the commit's own "ms-seq").
  function comparePos(a, b) {
    const pa = /^(\d+)-(\d+)(?:\.(\d+))?$/.exec(String(a));
    const pb = /^(\d+)-(\d+)(?:\.(\d+))?$/.exec(String(b));
    if (!pa || !pb) return 0; // unknown form: never treat as stale
    if (pa[1].length !== pb[1].length) return pa[1].length - pb[1].length;
    if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
    if (pa[2] !== pb[2]) return Number(pa[2]) - Number(pb[2]);
    const whole = 2 ** 31;
    return (pa[3] === undefined ? whole : Number(pa[3])) - (pb[3] === undefined ? whole : Number(pb[3]));
  }
  function notePosition(pos) {
    if (pos == null) return;
    if (lastPosition === null || comparePos(pos, lastPosition) > 0) lastPosition = String(pos);
  }

  function setStatus(s) {
    setText(el.status, s);
    if (el.statusWrap.dataset.state !== s) el.statusWrap.dataset.state = s;
  }

  function showError(text) {
    el.error.hidden = !text;
    setText(el.error, text || "");
  }

  function wsUrl() {
    const u = new URL("ws", location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    u.hash = "";
    u.search = "";
    if (feedToken) u.searchParams.set("token", feedToken);
    if (everConnected && lastPosition !== null) {
      u.searchParams.set("since", lastPosition);
      if (lastEpoch) u.searchParams.set("epoch", lastEpoch);
    }
    return u.href;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = 0;
    setStatus(everConnected ? "reconnecting" : "connecting");
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return; // not JSON: ignore
      }
      if (msg && typeof msg === "object") handle(msg);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      clearTimeout(resumedTimer);
      settleAll(); // the replay stopped for us: land on what was received
      scheduleReconnect();
    };
    sock.onerror = () => {
      /* a close event follows */
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    setStatus(everConnected ? "reconnecting" : "connecting");
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = Math.min(BACKOFF_MAX_MS, base * (0.75 + Math.random() * 0.5));
    attempt = Math.min(attempt + 1, 10);
    reconnectTimer = setTimeout(connect, delay);
  }

  window.addEventListener("online", () => {
    if (!ws && reconnectTimer) connect();
  });

  function handle(msg) {
    switch (msg.type) {
      case "hello":
        helloEpoch = msg.epoch ?? null;
        everConnected = true; // "live" or "resumed" once the snapshot says which
        setText(el.server, [msg.server, msg.protocol != null ? "protocol " + msg.protocol : ""].filter(Boolean).join(" · "));
        break;
      case "snapshot": {
        const wasConnected = state !== null;
        everConnected = true;
        attempt = 0;
        showError("");
        if (msg.position != null) lastPosition = String(msg.position);
        lastEpoch = String(msg.epoch ?? helloEpoch ?? "");
        applyState(msg.state, msg.epoch ?? helloEpoch, true);
        clearTimeout(resumedTimer);
        const recovered = msg.recovered ?? (msg.state && msg.state.recovered);
        if (wasConnected && recovered === true) {
          setStatus("resumed");
          resumedTimer = setTimeout(() => {
            if (ws) setStatus("live");
          }, RESUMED_MS);
        } else {
          setStatus("live");
        }
        break;
      }
      case "tick":
        if (state === null) break; // wait for the snapshot
        if (msg.position != null && lastPosition !== null && comparePos(msg.position, lastPosition) < 0) break;
        notePosition(msg.position);
        applyState(msg.state, runEpoch, false);
        break;
      case "replay":
        // The replay's own state, pushed whenever it changes (also when no orders flow).
        if (state === null) break; // the snapshot carries it
        state.replay = msg.replay ?? null;
        renderReplay();
        renderRates();
        break;
      case "milestone":
        notePosition(msg.position);
        if (state !== null) addMilestone(msg.milestone, true);
        break;
      case "error":
        showError("Server error" + (msg.code ? " [" + msg.code + "]" : "") + (msg.message ? ": " + msg.message : ""));
        break;
      default:
        break; // unknown message types are ignored
    }
  }

  // ---------------------------------------------------------------- layout

  let resizeTimer = 0;
  function relayout() {
    readLayout();
    fitCanvas(el.mapBase, el.mapBase.clientWidth, el.mapBase.clientHeight);
    fitCanvas(el.chart, el.chart.clientWidth, el.chart.clientHeight);
    map.drawBase();
    map.clearArcs();
    chart.dirty = true;
    fitMilestonesSoon();
    fitFeed();
    kick();
  }
  if (window.ResizeObserver) {
    new ResizeObserver(() => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(relayout, 60);
    }).observe(el.mapBase);
    new ResizeObserver((entries) => {
      for (const e of entries) fitCanvas(el.chart, e.contentRect.width, e.contentRect.height);
      chart.dirty = true;
      kick();
    }).observe(el.chart);
  }
  window.addEventListener("resize", () => {
    if (bannerBusy && el.header) el.banner.style.minHeight = el.header.offsetHeight + "px";
  });
  // A safety net for the chart's size: under load a resize was seen to leave the canvas
  // drawn at its old size (labels past its edge) with no later redraw, and after the end no
  // tick comes to redraw it. Once a second, one cheap read of its box puts that right.
  setInterval(() => {
    if (document.hidden) return;
    const { width: w, height: h } = el.chart.getBoundingClientRect();
    if (Math.abs(w - (el.chart.cssW || 0)) > 1 || Math.abs(h - (el.chart.cssH || 0)) > 1) {
      fitCanvas(el.chart, w, h);
      chart.dirty = true;
      kick();
    }
  }, 1000);

  // For tests and curious operators: what the canvases hold.
  window.tickerView = {
    get chart() {
      return {
        points: chart.ts.length,
        lastYearPoints: chart.last.length,
        drawnNow: chart.drawnNow,
        drawnLast: chart.drawnLast,
        ymax: chart.ymaxTarget,
        ymaxShown: chart.ymax,
        hasCurve: chart.curve !== null,
        fromMs: chart.fromMs,
        // simulated times of the first point of this replay and of the last point drawn
        firstMs: chart.startIndex() >= 0 ? chart.ts[chart.startIndex()] : null,
        lastMs: chart.ts.length ? chart.ts[chart.ts.length - 1] : null,
        // text on the canvas, boxes in CSS px, and the canvas's own size
        labels: chart.labels.map((l) => ({ ...l })),
        width: el.chart.cssW || 0,
        height: el.chart.cssH || 0,
      };
    },
    get arcs() {
      return { active: map.active, peak: map.peak, max: MAX_ARCS, queued: map.queue.length };
    },
    get currency() {
      return currency;
    },
    mergeTail, // the curve rule, for tests against ticker/core/timeline.py
  };

  setCurrency(wantedCurrency === "USD" ? "RMB" : wantedCurrency, false); // USD once a rate arrives
  relayout();
  connect();
})();
