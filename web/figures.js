// The figures around the counter: rates and their meters, the clock and the day's
// progress, the headline figures, the basis of a window replayed from mid-day, and the
// lines under the counter (against last year, the next milestone).

import { chart } from "./chart.js";
import { renderReplay, replayState } from "./controls.js";
import { gmv, orders } from "./counter.js";
import { el, setData, setHidden, setStyle, setText, setTitle } from "./dom.js";
import { DAY_MS, fmtClock, fmtInt, fmtMoney, fmtMoneyCompact, msLabel, niceCeil, scaleOf } from "./format.js";
import { glideTo, LINEAR } from "./glide.js";
import { categories, countries } from "./lists.js";
import { state } from "./store.js";

export const peaks = { gmv: 0, gmvAt: 0, orders: 0, ordersAt: 0 };
const METER_GLIDE_MS = 250; // about the panels' pace (main.js): a meter keeps moving
const DAY_GLIDE_MS = 300;
function renderMeter(fill, mark, value, peak) {
  const scale = niceCeil(peak) || 1;
  glideTo(fill, Math.min(1, Math.max(0, value / scale)), METER_GLIDE_MS);
  setStyle(mark, "opacity", peak > 0 ? "1" : "0");
  setStyle(mark, "left", (Math.min(1, peak / scale) * 100).toFixed(2) + "%");
}
export function renderRates() {
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
    setData(n.parentNode, "over", String(!!still));
  }
  renderMeter(el.meterGmv, el.meterGmvPeak, g, peaks.gmv);
  renderMeter(el.meterOrders, el.meterOrdersPeak, o, peaks.orders);
  setTitle(el.meterGmv.parentNode, peaks.gmv ? "peak " + fmtMoney(peaks.gmv) + "/s at " + fmtClock(peaks.gmvAt) : "");
  setTitle(el.meterOrders.parentNode, peaks.orders ? "peak " + fmtInt(peaks.orders) + "/s at " + fmtClock(peaks.ordersAt) : "");
}

export function renderMeta(partial) {
  const s = state;
  if ("title" in partial) {
    const t = String(s.title || "11.11 Global Shopping Festival");
    setText(el.title, t);
    if (document.title !== t + " · live counter") document.title = t + " · live counter";
  }
  if ("scale" in partial) {
    const k = scaleOf();
    setHidden(el.scale, k === 1);
    const text = k < 1 ? "1:" + fmtInt(Math.round(1 / k)) + " miniature" : k > 1 ? "×" + s.scale + " scale" : "";
    setText(el.scale, text);
    setTitle(el.scale, k === 1 ? "" : "Every amount on this page is at " + text + " of the real day");
  }
  if ("sim_time_ms" in partial) {
    setText(el.clock, fmtClock(s.sim_time_ms));
    const frac = Math.max(0, Math.min(1, (Number(s.sim_time_ms) || 0) / DAY_MS));
    glideTo(el.dayProgress, frac, DAY_GLIDE_MS, LINEAR, 0.0001);
  }
  renderRates();
  if ("top_categories" in partial) categories.render(s.top_categories);
  if ("top_countries" in partial) countries.render(s.top_countries);
  renderBasis();
  renderHeadline();
  setHidden(el.endedChip, s.ended !== true);
  renderReplay();
  renderContext();
  renderLive();
}

// A live event (`ticker live start`: profile "live") is not a replay of 11.11 in Beijing:
// no festival mark, no replay chip, the event's own clock, no last-year key without a
// last-year curve, and no RMB 100m brand line (a festival's yardstick).
const servedText = new Map(); // element -> its text on the page as served
function relabel(node, live, text) {
  if (!node) return;
  if (!servedText.has(node)) servedText.set(node, node.textContent);
  setText(node, live ? text : servedText.get(node));
}
function renderLive() {
  const live = state.profile === "live";
  setData(document.body, "live", String(live));
  const mark = document.querySelector(".brand-mark");
  if (mark) setHidden(mark, live);
  relabel(el.clock.previousElementSibling.querySelector(".muted"), live, "event time");
  relabel(el.orders.previousElementSibling, live, "Orders");
  relabel(document.querySelector("#ms-label .muted"), live, "live");
  relabel(document.querySelector(".key-now"), live, "today");
  relabel(el.endedChip, live, "Event ended");
  const lastYear = document.querySelector(".key-last");
  if (lastYear) setHidden(lastYear, !(state.last_year_points || []).length);
  setHidden(el.brandsOver.parentElement, live);
}

// The window's base, [gmv_fen, orders] at its start (from the curve); null if unknown.
export function windowBase() {
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
    setHidden(n, !since);
  }
  setHidden(el.basis, from === 0);
  setText(el.basis, from > 0
    ? "Replay from " + hhmm + " · counter and chart: totals from 00:00 · lists, brands and shares: since " + hhmm
    : "");
}

// The day's headline figures, on the counter's scale.
export function renderHeadline() {
  const s = state;
  setText(el.brandLine, fmtMoneyCompact(10000000000 * scaleOf(), true)); // RMB 100m, scaled
  setText(el.brandsOver, fmtInt(s.brands_over_100m || 0));
  const named = (Array.isArray(s.top_brands) ? s.top_brands : [])
    .map((b) => String((b && b.name) ?? ""))
    .filter((n) => n && !/^Brand \d+$/.test(n));
  setText(el.topBrands, named.join(" · ") || "–");
  setTitle(el.topBrands, named.join(", "));
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
  setTitle(el.intlShare, exact ? "" : "at least: from the ten largest seller countries abroad");
  const regions = s.buyer_regions_abroad == null ? NaN : Number(s.buyer_regions_abroad);
  setHidden(el.regionsFigure, !Number.isFinite(regions));
  if (Number.isFinite(regions)) setText(el.regionsAbroad, fmtInt(regions));
}

// Lines under the counter: against last year, and the next milestone.
export function renderContext() {
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