// The world map: a dot grid drawn once per size (the base layer), and arcs from seller
// countries to buyer regions for recent cross-border orders (at most MAX_ARCS at once, on
// a second canvas). The text list of the latest orders follows the arcs.
//
// The arcs are drawn by a worker on that canvas, handed over as an OffscreenCanvas: they
// move ~30 times a second, and drawn here each of those frames would cost the page a
// whole frame on its main thread (style, layout, paint, commit). This module decides
// which arcs fly and when, and sends them; a browser that cannot hand a canvas to a
// module worker gets them drawn here, the same way (arcs.js).

import { ARC_LIFE_MS, drawArcs } from "./arcs.js";
import { el, fitCanvas, layout, reducedMotion } from "./dom.js";
import { hash01 } from "./format.js";
import { GEO } from "./geo.js";
import { FEED_ROWS, renderFeed } from "./lists.js";
import { DIGITS_MS, kick } from "./loop.js";
import { color, rgb } from "./theme.js";

export const MAX_ARCS = 40; // arcs on the map at once (the real screen's "flying-line pool")
const ARC_QUEUE = 24; // orders waiting for an arc; older ones are dropped
const ARC_SPACING_MS = 65; // at most ~15 new arcs a second
const FEED_EVERY_MS = 450;

const MAP = { lon0: -25, lonSpan: 330, latTop: 72, latBottom: -50, kx: Math.cos((25 * Math.PI) / 180) };
const proj = { s: 1, ox: 0, oy: 0 };
const normLon = (lon) => (lon < MAP.lon0 ? lon + 360 : lon);

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

export const map = {
  arcs: [], // pool of arc objects (reused), at most MAX_ARCS
  peak: 0, // most arcs ever on screen at once (for tests)
  queue: [], // orders waiting for an arc
  seen: new Set(), // keys of recent sample orders (bounded)
  seenOrder: [],
  nextLaunch: 0, // the earliest start of the next arc
  // Who draws the arcs: "loading" (a worker is starting: they are only recorded), "worker"
  // (it holds the canvas) or "here" (this module, on the page's frames).
  drawer: "here",
  worker: null,
  drawsHere: false, // arcs drawn by this module are on screen (it needs frames)
  lastFeed: 0,
  launched: [], // newest first, for the text feed
  feedDirty: false,
  pulses: new Map(), // seller name -> last launch time

  // Arcs on screen now.
  get active() {
    const now = performance.now();
    let n = 0;
    for (const a of this.arcs) if (a.born <= now && now - a.born < ARC_LIFE_MS) n++;
    return n;
  },

  // The arcs' canvas takes the base's size (which drops the arcs).
  sizeArcs() {
    const c = el.mapBase;
    if (!c.cssW) return;
    if (this.drawer === "worker") this.worker.postMessage({ size: [c.width, c.height], dpr: c.width / c.cssW });
    else if (this.drawer === "here") fitCanvas(el.mapArcs, c.cssW, c.cssH);
  },

  drawBase() {
    const c = el.mapBase;
    if (!c.cssW) return;
    this.sizeArcs();
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
    ctx.fillStyle = color("land");
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
      glow.addColorStop(0, color("accent", 0.2));
      glow.addColorStop(1, color("accent", 0));
      ctx.fillStyle = glow;
      ctx.fillRect(cx - 30 * proj.s, cy - 30 * proj.s, 60 * proj.s, 60 * proj.s);
      ctx.fillStyle = color("home", 0.8);
      for (let i = 0; i < home.length; i += 2) ctx.fillRect(home[i] - r, home[i + 1] - r, 2 * r, 2 * r);
    }

    // seller countries
    const fs = Math.max(9 * dpr, Math.round(layout.rootPx * 0.62 * dpr));
    ctx.font = "600 " + fs + "px " + layout.font;
    ctx.textBaseline = "middle";
    for (const [name, p] of Object.entries(GEO.SELLERS)) {
      if (name === "China" || name === "South Korea") continue;
      const [x, y] = project(p[0], p[1]);
      ctx.fillStyle = color("cyan", 0.9);
      ctx.beginPath();
      ctx.arc(x, y, 2.2 * dpr, 0, Math.PI * 2);
      ctx.fill();
      if (p[2] && W / dpr > 360) {
        ctx.fillStyle = color("place", 0.75);
        ctx.textAlign = p[0] > 140 || p[0] < -60 ? "left" : "right";
        const dx = ctx.textAlign === "left" ? 5 * dpr : -5 * dpr;
        ctx.fillText(p[2], x + dx, y);
      }
    }
    if (GEO.EUROPE_LABEL && W / dpr > 360) {
      const [x, y] = project(GEO.EUROPE_LABEL[0], GEO.EUROPE_LABEL[1] + 9);
      ctx.fillStyle = color("place", 0.75);
      ctx.textAlign = "center";
      ctx.fillText(GEO.EUROPE_LABEL[2], x, y);
    }
  },

  // Arcs hold pixel positions, so a resize drops them (the text feed stays).
  clearArcs() {
    for (const a of this.arcs) a.born = -Infinity;
    if (this.drawer === "worker") {
      this.worker.postMessage({ clear: true });
    } else if (this.drawsHere) {
      const c = el.mapArcs;
      c.getContext("2d").clearRect(0, 0, c.width, c.height);
      this.drawsHere = false;
    }
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

  // An arc for order `o`, starting at `born` (frame time, ms); its figures for the worker
  // go into `sent`. The text feed lists the order either way.
  spawn(o, born, sent) {
    const from = this.place(String(o.seller), GEO.SELLERS, false);
    const to = this.place(String(o.buyer), GEO.BUYERS, true);
    this.launched.unshift(o);
    if (this.launched.length > FEED_ROWS) this.launched.length = FEED_ROWS;
    this.feedDirty = true;
    if (!from) return;
    // arcs start in order, so those still flying at `born` are the ones born since
    let flying = 0;
    let a = null;
    for (const x of this.arcs) {
      if (born - x.born < ARC_LIFE_MS) flying++;
      else if (!a) a = x;
    }
    if (flying >= MAX_ARCS) return;
    if (!a) {
      a = {};
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
    a.born = born;
    if (flying + 1 > this.peak) this.peak = flying + 1;
    this.pulses.set(String(o.seller), born);
    sent.push([a.x0, a.y0, a.cx, a.cy, a.x1, a.y1, a.w, born]);
  },

  // Launch the arcs due, hand them to whoever draws them, and keep the text feed; true
  // while anything is left to do. The list of orders is written only on the counters'
  // frames (`show`: see loop.js).
  frame(now, show) {
    if (this.queue.length && !reducedMotion) {
      // One arc per ARC_SPACING_MS of wall time. The page's frames come DIGITS_MS apart:
      // the arcs due before the one after next are launched now, each with its own start
      // (one message to the worker every other frame).
      const sent = [];
      let at = Math.max(this.nextLaunch, now);
      if (at < now + DIGITS_MS) {
        for (; this.queue.length && at <= now + 2 * DIGITS_MS; at += ARC_SPACING_MS) this.spawn(this.queue.shift(), at, sent);
      }
      this.nextLaunch = at;
      if (this.drawer === "worker" && sent.length) {
        // (their starts as delays: the worker's clock has another origin)
        for (const s of sent) s[7] -= performance.now();
        this.worker.postMessage({ arcs: sent });
      }
      if (this.drawer === "here" && sent.length) this.drawsHere = true;
    } else if (reducedMotion && this.queue.length) {
      const o = this.queue.pop();
      this.queue.length = 0;
      this.launched.unshift(o);
      if (this.launched.length > FEED_ROWS) this.launched.length = FEED_ROWS;
      this.feedDirty = true;
    }
    if (this.feedDirty && show && now - this.lastFeed >= FEED_EVERY_MS) {
      this.lastFeed = now;
      this.feedDirty = false;
      renderFeed(this.launched);
    }
    if (this.drawsHere) {
      const c = el.mapArcs;
      const dpr = c.width / Math.max(1, c.cssW || 1);
      this.drawsHere = drawArcs(c.getContext("2d"), this.arcs, now, dpr, arcColors()) > 0;
    }
    return this.drawsHere || this.queue.length > 0 || this.feedDirty;
  },
};

const arcColors = () => ({ arc: rgb("arc"), gold: rgb("gold") });

// Hand the arcs' canvas to a worker, once it has loaded (a browser without module
// workers fails to load it, and the arcs are drawn here). The canvas must have no context
// of its own by then: nothing is drawn on it while the worker loads.
function startWorker() {
  if (!window.Worker || !("transferControlToOffscreen" in HTMLCanvasElement.prototype)) return;
  let worker;
  try {
    worker = new Worker(new URL("./arcs-worker.js", import.meta.url), { type: "module" });
  } catch (e) {
    return;
  }
  map.drawer = "loading";
  const fail = () => {
    worker.terminate();
    if (map.drawer !== "loading") return;
    map.drawer = "here";
    map.sizeArcs();
    map.drawsHere = true; // the arcs that fly now, if any
    kick();
  };
  worker.onerror = fail;
  worker.onmessage = ({ data }) => {
    if (data !== "ready" || map.drawer !== "loading") return;
    let canvas;
    try {
      canvas = el.mapArcs.transferControlToOffscreen();
    } catch (e) {
      fail();
      return;
    }
    worker.postMessage({ canvas, colors: arcColors(), hidden: document.hidden }, [canvas]);
    map.worker = worker;
    map.drawer = "worker";
    map.sizeArcs();
    const now = performance.now(); // and the arcs that fly now
    const flying = map.arcs.filter((a) => now - a.born < ARC_LIFE_MS);
    worker.postMessage({ arcs: flying.map((a) => [a.x0, a.y0, a.cx, a.cy, a.x1, a.y1, a.w, a.born - now]) });
  };
  // a background tab draws nothing
  document.addEventListener("visibilitychange", () => map.worker && map.worker.postMessage({ hidden: document.hidden }));
}
startWorker();
