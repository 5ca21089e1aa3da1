// The page's elements, and the layout figures the canvases are drawn with.

const $ = (id) => document.getElementById(id);

export const el = {
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
  chartHead: $("chart-head"),
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

// A text that changes in place: its text node's data is rewritten, which costs a layout
// of the text; textContent would replace the node (a style recalculation too). Text
// that appears or empties goes through textContent (":empty" rules follow it).
export function setText(node, text) {
  const t = node.firstChild;
  if (t && t.nodeType === Node.TEXT_NODE && !t.nextSibling && t.data && text) {
    if (t.data !== text) t.data = text;
  } else if (node.textContent !== text) {
    node.textContent = text;
  }
}

export const reducedMotion = window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches;

// On the one-screen layout the side panels have fixed heights (rows that do not fit are
// left out whole).
export const oneScreen = window.matchMedia
  ? matchMedia("(min-width: 1100px) and (min-height: 560px) and (orientation: landscape)")
  : { matches: false };

// Layout figures, read only when the layout changes (never inside the frame loop,
// where reading them would force a synchronous layout every frame).
export const layout = { rootPx: 16, font: "sans-serif", dpr: 1 };
export function readLayout() {
  const cs = getComputedStyle(document.documentElement);
  layout.rootPx = parseFloat(cs.fontSize) || 16;
  layout.font = cs.getPropertyValue("--font").trim() || "sans-serif";
  layout.dpr = Math.min(2, window.devicePixelRatio || 1);
}

// Size a canvas's backing store to its CSS box (w x h CSS px).
export function fitCanvas(canvas, w, h) {
  canvas.cssW = w;
  canvas.cssH = h;
  const bw = Math.max(1, Math.round(w * layout.dpr));
  const bh = Math.max(1, Math.round(h * layout.dpr));
  if (canvas.width !== bw) canvas.width = bw;
  if (canvas.height !== bh) canvas.height = bh;
}

// Writes that skip what is already there: a write of the same value still costs a style
// recalculation (and a mutation record) on every tick.
export function setAttr(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}
export function setTitle(node, text) {
  if (node.title !== text) node.title = text;
}
export function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}
export function setData(node, key, value) {
  if (node.dataset[key] !== value) node.dataset[key] = value;
}
// (compared with what was written: the style reads back normalised, "0.5000" as "0.5")
export function setStyle(node, prop, value) {
  const written = node.written || (node.written = {});
  if (written[prop] !== value) node.style[prop] = written[prop] = value;
}
