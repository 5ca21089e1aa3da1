// Milestones: those fired (in replayed-time order, those before the window first), the
// upcoming ones, and the banner that announces each as it fires.

import { chart } from "./chart.js";
import { el, oneScreen, setText } from "./dom.js";
import { DAY_MS, fmtClock, fmtDelta, milestoneClock, msLabel, parseClock } from "./format.js";
import { state } from "./store.js";

const BANNER_MS = 4500;
const BANNER_MS_BUSY = 2500; // when several milestones are queued
const BANNER_FADE_MS = 400;

export const fired = new Map(); // id -> { m, li }
const upcomingRows = new Map(); // id -> li
const bannerQueue = [];
export let bannerBusy = false;
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
export function addMilestone(m, announce, before) {
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
export function relabelMilestones() {
  for (const { m, label } of fired.values()) setText(label, msLabel(m));
  for (const [, li] of upcomingRows) if (li.m) setText(li.querySelector(".ms-label"), msLabel(li.m));
  fitMilestonesSoon(); // the labels' widths changed
}

// On the one-screen layout the milestone panel has a fixed height: rows that do not fit
// are left out whole (upcoming ones last first, then the oldest fired), never cut.
let fitTimer = 0;
export function fitMilestonesSoon() {
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

export function renderUpcoming(list) {
  const want = new Set();
  let i = 0;
  let changed = false; // rows added, moved or removed: the panel is fitted again
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
    if (el.upcoming.children[i] !== li) {
      el.upcoming.insertBefore(li, el.upcoming.children[i] || null);
      changed = true;
    }
    i++;
  }
  for (const [id, li] of upcomingRows) {
    if (!want.has(id)) {
      li.remove();
      upcomingRows.delete(id);
      changed = true;
    }
  }
  if (changed) fitMilestonesSoon();
}

export function clearMilestones() {
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