// The lists: the latest cross-border orders, and the top categories and seller countries.
// Rows are reused, so a page that runs for hours holds a bounded number of them.

import { el, oneScreen, reducedMotion, setData, setText, setTitle } from "./dom.js";
import { fmtClock, fmtInt, fmtMoney, fmtMoneyCompact } from "./format.js";
import { EASE_OUT, glideTo } from "./glide.js";

export const FEED_ROWS = 8;
const TOP_N = 10;
const BAR_GLIDE_MS = 450;

const feedRows = [];
export function renderFeed(list) {
  const rowsBefore = el.feed.children.length;
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
  // Rows are one line each: which fit changes only with their number (or the layout).
  if (el.feed.children.length !== rowsBefore) fitFeed();
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
    // Most ticks leave a list as it was: then nothing is touched.
    const sig = list.map((it) => it.name + "\u0001" + it.gmv_fen + "\u0001" + it.orders).join("\u0000");
    if (sig === this.sig) return;
    this.sig = sig;
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
      setData(r.li, "name", r.key);
      setTitle(r.li, r.key + ": " + fmtMoney(fen) + " · " + fmtInt(it.orders) + " orders");
      glideTo(r.fill, max > 0 ? Math.max(0.004, fen / max) : 0, BAR_GLIDE_MS, EASE_OUT);
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
    this.sig = "";
    this.render(this.items);
  }
}

export const categories = new BarList(el.topCategories);
export const countries = new BarList(el.topCountries);

export function fitFeed() {
  const rows = [...el.feed.children];
  for (const li of rows) li.hidden = false;
  if (!oneScreen.matches) return;
  for (let i = rows.length - 1; i >= 1 && el.feed.scrollHeight > el.feed.clientHeight + 1; i--) rows[i].hidden = true;
}