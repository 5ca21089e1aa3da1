// 11.11 festival counter — browser client.
// One WebSocket to ./ws, a switch on message type, DOM updated with textContent,
// fixed/bounded DOM (list rows and milestone items are reused, never duplicated).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    header: document.querySelector(".topbar"),
    title: $("title"),
    scale: $("scale"),
    endedChip: $("ended-chip"),
    status: $("status"),
    statusWrap: $("status-wrap"),
    banner: $("banner"),
    bannerText: $("banner-text"),
    bannerDoc: $("banner-doc"),
    announcer: $("announcer"),
    gmv: $("gmv"),
    orders: $("orders"),
    clock: $("clock"),
    rateGmv: $("rate-gmv"),
    rateOrders: $("rate-orders"),
    dayProgress: $("day-progress"),
    vsLastYear: $("vs-last-year"),
    nextMilestone: $("next-milestone"),
    topCategories: $("top-categories"),
    topCountries: $("top-countries"),
    milestones: $("milestones"),
    milestonesEmpty: $("milestones-empty"),
    error: $("error"),
    server: $("server"),
  };

  const DAY_MS = 86400000;
  const TOP_N = 10;
  const BANNER_MS = 4500;
  const BANNER_MS_BUSY = 2500; // when several milestones are queued
  const BANNER_FADE_MS = 400;
  const STALL_MS = 1500; // no tick for this long: settle on the exact value
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_MAX_MS = 5000;

  // ---------------------------------------------------------------- formatting

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const fmtInt = (n) => intFmt.format(Math.floor(Number(n) || 0));
  const fmtYuan = (fen) => "¥" + fmtInt(Math.floor((Number(fen) || 0) / 100));

  function fmtYuanCompact(fen) {
    const y = (Number(fen) || 0) / 100;
    const units = [[1e12, "tn"], [1e9, "bn"], [1e6, "m"], [1e3, "k"]];
    for (const [div, suffix] of units) {
      if (y >= div) {
        const v = y / div;
        return "¥" + v.toFixed(v >= 10 ? 1 : 2) + suffix;
      }
    }
    return "¥" + fmtInt(y);
  }

  const pad2 = (n) => (n < 10 ? "0" : "") + n;
  function fmtClock(ms) {
    ms = Math.max(0, Math.min(DAY_MS, Math.floor(Number(ms) || 0)));
    const s = Math.floor(ms / 1000);
    return pad2(Math.floor(s / 3600)) + ":" + pad2(Math.floor(s / 60) % 60) + ":" + pad2(s % 60);
  }
  const milestoneClock = (m) =>
    typeof m.sim_time === "string" && m.sim_time.length >= 8 ? m.sim_time.slice(0, 8) : fmtClock(m.sim_time_ms);

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
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

  const gmv = new Counter(el.gmv, fmtYuan);
  const orders = new Counter(el.orders, fmtInt);
  const counters = [gmv, orders];

  let tickIntervalMs = 100; // smoothed inter-arrival time of ticks
  let lastTickAt = 0;
  let lastFrameAt = 0;
  let rafId = 0;

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
    if (moving) rafId = requestAnimationFrame(frame);
    else lastFrameAt = 0;
    checkEnded();
  }

  function kick() {
    if (!rafId) rafId = requestAnimationFrame(frame);
  }

  function settleAll() {
    for (const c of counters) c.settle();
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

  // ---------------------------------------------------------------- top lists

  class BarList {
    constructor(ol) {
      this.ol = ol;
      this.rows = [];
      for (let i = 0; i < TOP_N; i++) this.rows.push(this.makeRow(i));
    }
    makeRow(i) {
      const li = document.createElement("li");
      li.className = "bar-row";
      const head = document.createElement("div");
      head.className = "bar-head";
      const nameWrap = document.createElement("span");
      nameWrap.className = "bar-name";
      const rank = document.createElement("span");
      rank.className = "bar-rank";
      rank.textContent = String(i + 1);
      const name = document.createElement("span");
      nameWrap.append(rank, name);
      const amount = document.createElement("span");
      amount.className = "bar-amount";
      head.append(nameWrap, amount);
      const track = document.createElement("div");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.append(fill);
      li.append(head, track);
      return { li, name, amount, fill };
    }
    render(items) {
      const list = Array.isArray(items) ? items.slice(0, TOP_N) : [];
      let max = 0;
      for (const it of list) max = Math.max(max, Number(it.gmv_fen) || 0);
      this.rows.forEach((r, i) => {
        const it = list[i];
        if (!it) {
          if (r.li.isConnected) r.li.remove();
          return;
        }
        const nm = String(it.name ?? "");
        const fen = Number(it.gmv_fen) || 0;
        setText(r.name, nm);
        setText(r.amount, fmtYuanCompact(fen));
        if (r.li.dataset.name !== nm) r.li.dataset.name = nm;
        r.li.title = nm + ": " + fmtYuan(fen) + " · " + fmtInt(it.orders) + " orders";
        r.fill.style.transform = "scaleX(" + (max > 0 ? Math.max(0.004, fen / max) : 0).toFixed(4) + ")";
        if (!r.li.isConnected || r.li.parentNode !== this.ol || this.ol.children[i] !== r.li) {
          this.ol.insertBefore(r.li, this.ol.children[i] || null);
        }
      });
    }
  }

  const categories = new BarList(el.topCategories);
  const countries = new BarList(el.topCountries);

  // ---------------------------------------------------------------- milestones

  const fired = new Map(); // id -> { m, li }
  const bannerQueue = [];
  let bannerBusy = false;
  let bannerTimer = 0;

  function addMilestone(m, announce) {
    if (!m || m.id == null) return;
    const id = String(m.id);
    if (fired.has(id)) return;
    const li = document.createElement("li");
    li.dataset.id = id;
    const time = document.createElement("span");
    time.className = "ms-time";
    time.textContent = milestoneClock(m);
    const label = document.createElement("span");
    label.className = "ms-label";
    label.textContent = String(m.label ?? id);
    const doc = document.createElement("span");
    doc.className = "ms-doc";
    doc.textContent = m.documented ? "documented " + m.documented : "";
    li.append(time, label, doc);
    li.title = (m.label ?? id) + " at " + (m.sim_time || fmtClock(m.sim_time_ms));
    fired.set(id, { m, li });

    // keep the list in firing (replayed time) order
    const ordered = [...fired.values()].sort((a, b) => (a.m.sim_time_ms || 0) - (b.m.sim_time_ms || 0));
    const next = ordered[ordered.findIndex((x) => x.li === li) + 1];
    el.milestones.insertBefore(li, next ? next.li : null);
    el.milestonesEmpty.hidden = true;

    if (announce) {
      li.classList.add("fresh");
      bannerQueue.push(m);
      showNextBanner();
    }
  }

  function clearMilestones() {
    for (const { li } of fired.values()) li.remove();
    fired.clear();
    el.milestonesEmpty.hidden = false;
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
    const text = String(m.label ?? m.id) + " at " + milestoneClock(m);
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

  window.addEventListener("resize", () => {
    if (bannerBusy && el.header) el.banner.style.minHeight = el.header.offsetHeight + "px";
  });

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

    // Counters: a fresh run shows its values at once; otherwise animate on.
    const glide = tickIntervalMs * 1.15;
    if ("gmv_fen" in partial) gmv.push(partial.gmv_fen, glide);
    if ("orders" in partial) orders.push(partial.orders, glide);
    if (fresh || state.ended === true) settleAll();
    else kick();

    renderMeta(partial);

    if (Array.isArray(partial.milestones)) {
      // History that came with a new run's first snapshot is listed, not announced.
      for (const m of partial.milestones) addMilestone(m, !fresh);
    }
    checkEnded();
  }

  function renderMeta(partial) {
    const s = state;
    if ("title" in partial) {
      const t = String(s.title || "11.11 Global Shopping Festival");
      setText(el.title, t);
      document.title = t + " · live counter";
    }
    if ("scale" in partial) {
      const scaled = s.scale != null && String(s.scale) !== "1";
      el.scale.hidden = !scaled;
      setText(el.scale, scaled ? "scale ×" + s.scale : "");
    }
    if ("sim_time_ms" in partial) {
      setText(el.clock, fmtClock(s.sim_time_ms));
      const frac = Math.max(0, Math.min(1, (Number(s.sim_time_ms) || 0) / DAY_MS));
      el.dayProgress.style.transform = "scaleX(" + frac.toFixed(5) + ")";
    }
    if ("gmv_fen_per_s" in partial) setText(el.rateGmv, fmtYuan(s.gmv_fen_per_s));
    if ("orders_per_s" in partial) setText(el.rateOrders, fmtInt(s.orders_per_s));
    if ("top_categories" in partial) categories.render(s.top_categories);
    if ("top_countries" in partial) countries.render(s.top_countries);
    el.endedChip.hidden = s.ended !== true;

    // context lines under the counter
    const last = Number(s.last_year_gmv_fen) || 0;
    if (last > 0) {
      const pct = (gmv.target / last) * 100;
      setText(
        el.vsLastYear,
        "Last year " + fmtYuanCompact(last) + " · " +
          (pct >= 100 ? "beaten, +" + (pct - 100).toFixed(1) + "%" : pct.toFixed(1) + "% reached")
      );
    } else {
      setText(el.vsLastYear, "");
    }
    const up = Array.isArray(s.upcoming) ? s.upcoming[0] : null;
    if (up) {
      const have = up.metric === "orders" ? orders.target : gmv.target;
      const pct = up.threshold > 0 ? Math.min(99.9, (have / up.threshold) * 100) : 0;
      setText(el.nextMilestone, "Next: " + (up.label ?? up.id) + " · " + pct.toFixed(1) + "%");
    } else {
      setText(el.nextMilestone, s.ended ? "" : "All milestones reached");
    }
  }

  // ---------------------------------------------------------------- connection

  let ws = null;
  let attempt = 0;
  let everConnected = false;
  let reconnectTimer = 0;

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
        everConnected = true;
        setStatus("live");
        setText(el.server, [msg.server, msg.protocol != null ? "protocol " + msg.protocol : ""].filter(Boolean).join(" · "));
        break;
      case "snapshot":
        everConnected = true;
        attempt = 0;
        setStatus("live");
        showError("");
        applyState(msg.state, msg.epoch ?? helloEpoch, true);
        break;
      case "tick":
        if (state === null) break; // wait for the snapshot
        applyState(msg.state, runEpoch, false);
        break;
      case "milestone":
        if (state !== null) addMilestone(msg.milestone, true);
        break;
      case "error":
        showError("Server error" + (msg.code ? " [" + msg.code + "]" : "") + (msg.message ? ": " + msg.message : ""));
        break;
      default:
        break; // unknown message types are ignored
    }
  }

  connect();
})();
