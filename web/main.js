// 11.11 festival counter: the page's entry point. It wires the feed (feed-client.js) to
// the state, and the state to the panels: counter, chart, map, lists, milestones, figures
// and the replay control. DOM updates use textContent; everything that lives for hours is
// bounded (see each module).

import { chart, cleanCurve, mergeTail } from "./chart.js";
import { installControls, renderReplay } from "./controls.js";
import { counters, gmv, noteTick, orders, pace } from "./counter.js";
import { el, fitCanvas, readLayout, setText } from "./dom.js";
import { applyDelta } from "./delta.js";
import { FeedClient } from "./feed-client.js";
import { peaks, renderContext, renderHeadline, renderMeta, renderRates } from "./figures.js";
import { money, symbolOf } from "./format.js";
import { categories, countries, fitFeed } from "./lists.js";
import { checkEnded, kick, onDigitsFrame, settleAll } from "./loop.js";
import { MAX_ARCS, map } from "./map.js";
import {
  addMilestone,
  bannerBusy,
  clearMilestones,
  fitMilestonesSoon,
  relabelMilestones,
  renderUpcoming,
} from "./milestones.js";
import { setState, state } from "./store.js";

const RESUMED_MS = 5000; // how long "resumed" shows before "live"

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
const feedToken = storedToken("ticker.feed_token", "feed_token");
installControls(storedToken("ticker.token", "token"));

// Delta ticks: each tick only what changed since the previous one (docs/protocol.md).
const feed = new FeedClient("./", { token: feedToken, delta: applyDelta });

// ---------------------------------------------------------------- currency

function setCurrency(cur, remember) {
  money.currency = cur === "USD" && money.usdRate > 0 ? "USD" : "RMB";
  el.curRmb.setAttribute("aria-pressed", String(money.currency === "RMB"));
  el.curUsd.setAttribute("aria-pressed", String(money.currency === "USD"));
  document.body.dataset.currency = money.currency;
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

let runKey = null; // identity of the replay the state belongs to
let helloEpoch = null;
let runEpoch = null; // epoch of the snapshot that started the current run

// A replay is identified by `run`; when the server has no run id, its epoch.
const identityOf = (run, epoch) => (run != null ? "run:" + run : "epoch:" + (epoch ?? helloEpoch ?? ""));

function resetRun(key) {
  runKey = key;
  setState({});
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
  noteTick(isSnapshot);

  if ("currency" in partial && typeof partial.currency === "string") {
    // The day's own currency: CNY for a festival replay, a live event's own (its button
    // says so; "USD" stays the conversion).
    money.home = partial.currency;
    setText(el.curRmb, partial.currency === "CNY" ? "RMB" : partial.currency);
    if (partial.currency === "USD") {
      money.usdRate = 0; // no conversion to offer
      el.curUsd.disabled = true;
    }
  }
  if ("usd_rate" in partial && money.home !== "USD") {
    const r = parseFloat(partial.usd_rate);
    money.usdRate = Number.isFinite(r) && r > 0 ? r : 0;
    el.curUsd.disabled = money.usdRate <= 0;
    if (money.usdRate > 0 && wantedCurrency === "USD" && money.currency !== "USD") setCurrency("USD", false);
    if (money.usdRate <= 0 && money.currency === "USD") setCurrency("RMB", false);
    setText(el.usdNote, money.usdRate > 0 ? "US$1 = " + symbolOf(money.home) + partial.usd_rate : "");
  }
  if ("last_year_points" in partial) chart.setLastYear(partial.last_year_points);

  // Counters: a fresh run shows its values at once; otherwise animate on.
  const glide = pace.intervalMs * 1.15;
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


  if (Array.isArray(partial.before_window)) {
    for (const m of partial.before_window) addMilestone(m, false, true);
  }
  if (Array.isArray(partial.milestones)) {
    // History that came with a new run's first snapshot is listed, not announced.
    for (const m of partial.milestones) addMilestone(m, !fresh);
  }
  renderSoon(partial, isSnapshot || fresh);
  checkEnded();
}

// The panels follow the ticks at most every RENDER_MS (ticks come up to 10 a second and
// carry every field), on a frame where the counters' digits change anyway (one style and
// layout pass for both), and not at all while the tab is hidden: the state is merged,
// and drawn once the tab shows again.
const RENDER_MS = 250;
let pending = null; // the fields changed since the panels were last drawn
let renderedAt = -Infinity;

function renderSoon(partial, now) {
  pending = pending || {};
  for (const key in partial) pending[key] = true;
  if (now) render();
  else kick();
}

// A safety net for the chart's size: under load a resize was seen to leave the canvas
// drawn at its old size (labels past its edge) with no later redraw, and after the end no
// tick comes to redraw it. Once a second, one cheap read of its box puts that right, on
// the page's next frame (first in it, where the layout is the one just done; a frame of
// its own only when none is coming anyway).
let chartBoxDue = false;
setInterval(() => {
  if (document.hidden) return;
  chartBoxDue = true;
  kick();
}, 1000);
onDigitsFrame(() => {
  if (!chartBoxDue) return false;
  chartBoxDue = false;
  const { width: w, height: h } = el.chart.getBoundingClientRect();
  if (Math.abs(w - (el.chart.cssW || 0)) > 1 || Math.abs(h - (el.chart.cssH || 0)) > 1) {
    fitCanvas(el.chart, w, h);
    chart.dirty = true;
  }
  return false;
});

onDigitsFrame((now, show) => {
  if (!pending) return false;
  if (show && now - renderedAt >= RENDER_MS - 20) render();
  return pending !== null;
});

function render() {
  if (!pending || !state) return;
  const changed = pending;
  pending = null;
  renderedAt = performance.now();
  renderMeta(changed);
  if ("upcoming" in changed) renderUpcoming(state.upcoming);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  render();
  kick();
});

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
  if (retry && tries < 10) setTimeout(() => feed.connected && refetchCurve(true, tries + 1), 500);
}
// ---------------------------------------------------------------- connection

let resumedTimer = 0;

function setStatus(s) {
  setText(el.status, s);
  if (el.statusWrap.dataset.state !== s) el.statusWrap.dataset.state = s;
}

function showError(text) {
  el.error.hidden = !text;
  setText(el.error, text || "");
}

feed.on("status", ({ status }) => {
  clearTimeout(resumedTimer);
  if (status === "resumed") {
    resumedTimer = setTimeout(() => feed.connected && setStatus("live"), RESUMED_MS);
  }
  if (status !== "closed") setStatus(status);
});
feed.on("disconnect", () => {
  clearTimeout(resumedTimer);
  settleAll(); // the replay stopped for us: land on what was received
});
feed.on("hello", (msg) => {
  helloEpoch = msg.epoch ?? null;
  setText(el.server, [msg.server, msg.protocol != null ? "protocol " + msg.protocol : ""].filter(Boolean).join(" · "));
});
feed.on("snapshot", (msg) => {
  showError("");
  applyState(msg.state, msg.epoch ?? helloEpoch, true);
});
feed.on("tick", (msg) => {
  if (state !== null) applyState(msg.state, runEpoch, false); // else wait for the snapshot
});
feed.on("replay", (msg) => {
  // The replay's own state, pushed whenever it changes (also when no orders flow).
  if (state === null) return; // the snapshot carries it
  state.replay = msg.replay ?? null;
  renderReplay();
  renderRates();
});
feed.on("milestone", (msg) => {
  if (state !== null) addMilestone(msg.milestone, true);
});
feed.on("error", (msg) => {
  showError("Server error" + (msg.code ? " [" + msg.code + "]" : "") + (msg.message ? ": " + msg.message : ""));
});

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
  new ResizeObserver((entries) => {
    // (content elsewhere in the grid nudges the map's box by fractions of a pixel)
    const box = entries[entries.length - 1].contentRect;
    if (Math.abs(box.width - (el.mapBase.cssW || 0)) < 1 && Math.abs(box.height - (el.mapBase.cssH || 0)) < 1) return;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(relayout, 60);
  }).observe(el.mapBase);
  new ResizeObserver((entries) => {
    for (const e of entries) fitCanvas(el.chart, e.contentRect.width, e.contentRect.height);
    chart.dirty = true;
    kick();
  }).observe(el.chart);
  // The feed's box follows its neighbours (a headline wrapping to a second line): which
  // rows fit is worked out again when it changes, not on every new order.
  new ResizeObserver(() => fitFeed()).observe(el.feed);
}
window.addEventListener("resize", () => {
  if (bannerBusy && el.header) el.banner.style.minHeight = el.header.offsetHeight + "px";
});

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
      drawnWidth: chart.drawnSize ? chart.drawnSize[0] : 0,
      drawnHeight: chart.drawnSize ? chart.drawnSize[1] : 0,
      boxWidth: el.chart.getBoundingClientRect().width,
      boxHeight: el.chart.getBoundingClientRect().height,
    };
  },
  get arcs() {
    return { active: map.active, peak: map.peak, max: MAX_ARCS, queued: map.queue.length };
  },
  get currency() {
    return money.currency;
  },
  get transport() {
    return feed.transport;
  },
  mergeTail, // the curve rule, for tests against ticker/core/timeline.py
};

setCurrency(wantedCurrency === "USD" ? "RMB" : wantedCurrency, false); // USD once a rate arrives
relayout();
feed.start();
