// Numbers, money, clocks and labels as the page shows them. Amounts arrive in fen and are
// shown in the chosen currency (`money`), on the replay's scale.

import { state } from "./store.js";

export const DAY_MS = 86400000;

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
export const fmtInt = (n) => intFmt.format(Math.floor(Number(n) || 0));

// The shown currency ("RMB": the day's own, whatever it is; "USD"), the day's currency
// (state.currency, ISO 4217) and its units per USD (0 = unknown: no USD toggle).
export const money = { currency: "RMB", home: "CNY", usdRate: 0 };

const useUsd = () => money.currency === "USD" && money.usdRate > 0;
// Whole units of the shown currency for an amount in hundredths (fen, cents, ...).
const units = (fen) => (Number(fen) || 0) / 100 / (useUsd() ? money.usdRate : 1);
const SYMBOLS = { CNY: "¥", USD: "US$", EUR: "€", GBP: "£", JPY: "JP¥", KRW: "₩", INR: "₹" };
// The symbol of a currency code; other codes are shown as the code and a space.
export const symbolOf = (code) => SYMBOLS[code] || code + " ";
const sym = () => (useUsd() ? "US$" : symbolOf(money.home));
export const fmtMoney = (fen) => sym() + fmtInt(units(fen));

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
export const fmtMoneyCompact = (fen, trim) => fmtCompactUnits(units(fen), sym(), trim);

export const pad2 = (n) => (n < 10 ? "0" : "") + n;
export function fmtClock(ms) {
  ms = Math.max(0, Math.min(DAY_MS, Math.floor(Number(ms) || 0)));
  const s = Math.floor(ms / 1000);
  return pad2(Math.floor(s / 3600)) + ":" + pad2(Math.floor(s / 60) % 60) + ":" + pad2(s % 60);
}
export const milestoneClock = (m) =>
  typeof m.sim_time === "string" && m.sim_time.length >= 8 ? m.sim_time.slice(0, 8) : fmtClock(m.sim_time_ms);

// "HH:MM[:SS[.mmm]]" -> ms since midnight, or null.
export function parseClock(text) {
  const m = /^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(String(text ?? "").trim());
  if (!m) return null;
  const ms = ((+m[1] * 60 + +m[2]) * 60 + +(m[3] || 0)) * 1000 + +((m[4] || "0") + "00").slice(0, 3);
  return +m[2] < 60 && +(m[3] || 0) < 60 && ms <= DAY_MS ? ms : null;
}

// The replay's scale (state.scale, a decimal string): every amount is on it.
export const scaleOf = () => {
  const k = Number(state && state.scale);
  return Number.isFinite(k) && k > 0 ? k : 1;
};
const fmtCount = (n) => fmtCompactUnits(Number(n) || 0, "", true);
// A milestone's label with its amount on the counter's scale: the profile writes real
// amounts ("Passes 2017's total (RMB 168.2bn)"); the threshold is already scaled.
export function msLabel(m) {
  const text = String(m.label ?? m.id);
  const th = Number(m.threshold);
  if (scaleOf() === 1 || !Number.isFinite(th)) return text;
  if (m.metric === "orders") {
    return text.replace(/\d[\d.,]*\s?(?:tn|bn|m|k)?(?=\s+(?:delivery\s+)?orders)/i, fmtCount(th));
  }
  return text.replace(/RMB\s?\d[\d.,]*\s?(?:tn|bn|m|k)?\b/i, fmtMoneyCompact(th, true));
}

export function fmtDelta(ms) {
  const s = Math.round(ms / 1000);
  if (s === 0) return "on time";
  const a = Math.abs(s);
  const txt = a < 60 ? a + "s" : a < 3600 ? Math.round(a / 60) + "m" : (a / 3600).toFixed(1) + "h";
  return (s < 0 ? "−" : "+") + txt;
}

// Hash of a string into [0, 1), for stable jitter.
export function hash01(str) {
  let h = 2166136261;
  for (let i = 0; i < str.length; i++) h = Math.imul(h ^ str.charCodeAt(i), 16777619);
  return ((h >>> 0) % 100000) / 100000;
}

// "Nice" axis maximum: the smallest 1, 1.2, 1.5, 2, 2.5, ... x 10^k at or above v.
export function niceCeil(v) {
  if (!(v > 0)) return 0;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
export function niceStep(max, count) {
  const raw = max / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}
