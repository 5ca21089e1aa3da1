// A client for the festival ticker's live feed (docs/protocol.md), for any web page: an ES
// module with no dependencies. The ticker's own page uses it; another site copies this
// one file beside its page (docs/embed.html).
//
//   import { FeedClient } from "./feed-client.js";
//   const feed = new FeedClient("https://ticker.example.com/");
//   feed.on("state", ({ state }) => { counter.textContent = state.gmv_fen; });
//   feed.start();
//
// It connects by websocket (`/ws`) and falls back to Server-Sent Events (`/sse`) when a
// websocket cannot be had (none in this browser, or it failed to open `wsAttempts` times in
// a row before any opened, as behind a proxy that refuses the upgrade), or when
// `transport: "sse"` says so. After a drop it reconnects with a growing, jittered delay
// (0.25 s doubling to 5 s) and resumes from the last position and epoch, so it gets the
// milestones it missed and then a snapshot (`recovered: true`), or a fresh snapshot. An
// `EventSource` that is still retrying by itself resumes with `Last-Event-ID`.
//
// Events (`on(type, fn)` calls fn(detail); or addEventListener with a CustomEvent):
//   hello, snapshot, tick, milestone, replay, error   the server's message, as sent
//                                                     (stale ticks are dropped)
//   state     { state, message }  the whole current state after any of them changed it
//   status    { status, transport }  connecting | live | resumed | reconnecting | closed
//   disconnect { transport }      the connection went; a reconnection follows

const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 5000;

// Feed positions are Redis stream ids "ms-seq", optionally ".k" for the k-th of several
// milestones of one commit (which sorts before the commit's own "ms-seq").
export function comparePositions(a, b) {
  const pa = /^(\d+)-(\d+)(?:\.(\d+))?$/.exec(String(a));
  const pb = /^(\d+)-(\d+)(?:\.(\d+))?$/.exec(String(b));
  if (!pa || !pb) return 0; // unknown form: never treat as stale
  if (pa[1].length !== pb[1].length) return pa[1].length - pb[1].length;
  if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
  if (pa[2] !== pb[2]) return Number(pa[2]) - Number(pb[2]);
  const whole = 2 ** 31;
  return (pa[3] === undefined ? whole : Number(pa[3])) - (pb[3] === undefined ? whole : Number(pb[3]));
}

export class FeedClient extends EventTarget {
  // `base`: the ticker's address (its page), absolute or relative to this page.
  // options: token (a private feed's token), topics (array), maxRate (ticks/s),
  // transport ("auto" | "websocket" | "sse"), wsAttempts (3), backoff ({ baseMs, maxMs }),
  // delta (off: null; else a function (state, patch) -> state that applies the server's
  // delta ticks, e.g. applyDelta from delta.js; the client then asks for them).
  constructor(base = "./", options = {}) {
    super();
    this.base = new URL(base, typeof location === "undefined" ? undefined : location.href);
    this.options = { transport: "auto", wsAttempts: 3, token: "", delta: null, ...options };
    this.backoff = { baseMs: BACKOFF_BASE_MS, maxMs: BACKOFF_MAX_MS, ...(options.backoff || {}) };
    this.subscription = { topics: options.topics || null, maxRate: options.maxRate ?? null };
    this.state = null; // the whole current state (null until the first snapshot)
    this.tickBase = null; // the last tick's state, which a delta patches
    this.position = null; // the newest feed position received
    this.epoch = ""; // the feed lifetime that position belongs to
    this.hello = null;
    this.status = "idle";
    this.transport = null; // "websocket" or "sse" while connected or connecting
    this.useSse = this.options.transport === "sse" || typeof WebSocket === "undefined";
    this.wsFailures = 0; // websockets that failed to open in a row, before any opened
    this.wsOpened = false;
    this.attempt = 0;
    this.timer = 0;
    this.conn = null;
    this.onOnline = () => this.timer && this.connect();
  }

  // fn(detail) for each event of `type`; returns a function that stops it.
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  start() {
    if (this.status !== "idle" && this.status !== "closed") return this;
    if (typeof addEventListener === "function") addEventListener("online", this.onOnline);
    this.connect();
    return this;
  }

  close() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.drop();
    if (typeof removeEventListener === "function") removeEventListener("online", this.onOnline);
    this.setStatus("closed");
  }

  // Change the subscription: at once on a websocket; an SSE stream is opened again.
  subscribe({ topics = this.subscription.topics, maxRate = this.subscription.maxRate } = {}) {
    this.subscription = { topics, maxRate };
    if (this.conn && this.transport === "websocket") this.sendSubscription(this.conn);
    else if (this.conn) this.connect();
  }

  get connected() {
    return this.conn !== null;
  }

  // ---------------------------------------------------------------- transports

  connect() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.drop();
    this.setStatus(this.state === null ? "connecting" : "reconnecting");
    try {
      if (this.useSse) this.openSse();
      else this.openWebSocket();
    } catch (e) {
      this.conn = null;
      this.retry();
    }
  }

  url(path, scheme) {
    const u = new URL(path, this.base);
    if (scheme) u.protocol = this.base.protocol === "https:" ? "wss:" : "ws:";
    u.hash = "";
    u.search = "";
    if (this.options.token) u.searchParams.set("token", this.options.token);
    if (this.position !== null && this.state !== null) {
      u.searchParams.set("since", this.position);
      if (this.epoch) u.searchParams.set("epoch", this.epoch);
    }
    return u;
  }

  openWebSocket() {
    const Socket = this.options.WebSocket || WebSocket;
    const sock = new Socket(this.url("ws", true).href);
    this.conn = sock;
    this.transport = "websocket";
    let opened = false;
    sock.onopen = () => {
      opened = true;
      this.wsOpened = true;
      this.wsFailures = 0;
      this.sendSubscription(sock);
    };
    // (assigned, not added: a page may wrap the socket's onmessage, as the tests do)
    sock.onmessage = (ev) => this.conn === sock && this.receive(ev.data);
    sock.onclose = () => {
      if (this.conn !== sock) return;
      if (!opened && !this.wsOpened && this.options.transport === "auto") {
        this.wsFailures += 1;
        if (this.wsFailures >= this.options.wsAttempts) this.useSse = true;
      }
      this.lost();
    };
    sock.onerror = () => {
      /* a close event follows */
    };
  }

  sendSubscription(sock) {
    const { topics, maxRate } = this.subscription;
    if (topics === null && maxRate === null && !this.options.delta) return;
    const msg = { type: "subscribe" };
    if (topics !== null) msg.topics = topics;
    if (maxRate !== null) msg.max_rate = maxRate;
    if (this.options.delta) msg.delta = true;
    sock.send(JSON.stringify(msg));
  }

  openSse() {
    const Source = this.options.EventSource || EventSource;
    const u = this.url("sse", false);
    const { topics, maxRate } = this.subscription;
    if (topics !== null) u.searchParams.set("topics", topics.join(","));
    if (maxRate !== null) u.searchParams.set("max_rate", String(maxRate));
    if (this.options.delta) u.searchParams.set("delta", "1");
    const es = new Source(u.href);
    this.conn = es;
    this.transport = "sse";
    for (const type of ["hello", "snapshot", "tick", "delta", "milestone", "replay"]) {
      es.addEventListener(type, (ev) => this.conn === es && this.receive(ev.data));
    }
    es.onerror = () => {
      if (this.conn !== es) return;
      if (es.readyState === 2) {
        this.lost(); // refused or closed for good: our own backoff
      } else {
        // EventSource retries by itself, resuming with Last-Event-ID
        this.emit("disconnect", { transport: "sse" });
        this.setStatus("reconnecting");
      }
    };
  }

  drop() {
    const c = this.conn;
    this.conn = null;
    if (c) c.close();
  }

  lost() {
    const transport = this.transport;
    this.conn = null;
    this.emit("disconnect", { transport });
    this.retry();
  }

  retry() {
    if (this.timer || this.status === "closed") return;
    this.setStatus(this.state === null ? "connecting" : "reconnecting");
    const base = Math.min(this.backoff.maxMs, this.backoff.baseMs * 2 ** this.attempt);
    const delay = Math.min(this.backoff.maxMs, base * (0.75 + Math.random() * 0.5));
    this.attempt = Math.min(this.attempt + 1, 10);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // ---------------------------------------------------------------- messages

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return; // not JSON: ignore
    }
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "hello":
        this.hello = msg;
        break;
      case "snapshot": {
        const resumed = this.state !== null && msg.recovered === true;
        this.attempt = 0;
        if (msg.position != null) this.position = String(msg.position);
        this.epoch = String(msg.epoch ?? (this.hello && this.hello.epoch) ?? "");
        this.state = msg.state && typeof msg.state === "object" ? { ...msg.state } : {};
        this.tickBase = null; // the next tick is full
        this.emit("snapshot", msg);
        this.emit("state", { state: this.state, message: msg });
        this.setStatus(resumed ? "resumed" : "live");
        return;
      }
      case "tick":
      case "delta": {
        if (this.state === null) return; // wait for the snapshot
        if (msg.position != null && this.position !== null && comparePositions(msg.position, this.position) < 0) return;
        const changed = this.tickState(msg);
        if (changed === null) return; // a patch without a base: reconnecting
        this.notePosition(msg.position);
        msg.state = changed;
        Object.assign(this.state, changed);
        // A delta is handed out as the tick it stands for (its fields that changed).
        this.emit("tick", msg);
        this.emit("state", { state: this.state, message: msg });
        return;
      }
      case "milestone":
        this.notePosition(msg.position);
        if (this.state !== null && msg.milestone) {
          const list = Array.isArray(this.state.milestones) ? this.state.milestones : [];
          if (!list.some((m) => m && m.id === msg.milestone.id)) this.state.milestones = [...list, msg.milestone];
        }
        break;
      case "replay":
        if (this.state !== null) this.state.replay = msg.replay ?? null;
        break;
      case "error":
        break;
      default:
        return; // unknown message types are ignored
    }
    this.emit(msg.type, msg);
    if (this.state !== null && msg.type !== "hello" && msg.type !== "error") {
      this.emit("state", { state: this.state, message: msg });
    }
  }

  // The fields a tick changes. A delta's patch applies to the state of the previous tick
  // or delta (kept apart from milestones and replay messages, as the server computes it),
  // with the `delta` option's function; null when there is no tick to patch (the server
  // sends a full tick after every snapshot, so only a broken stream gets here).
  tickState(msg) {
    if (msg.type === "tick") {
      this.tickBase = msg.state || {};
      return this.tickBase;
    }
    if (!this.options.delta || this.tickBase == null || msg.patch == null) {
      this.drop();
      this.lost();
      return null;
    }
    this.tickBase = this.options.delta(this.tickBase, msg.patch);
    const changed = {};
    for (const key of Object.keys(msg.patch)) changed[key] = this.tickBase[key];
    return changed;
  }

  notePosition(pos) {
    if (pos == null) return;
    if (this.position === null || comparePositions(pos, this.position) > 0) this.position = String(pos);
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.emit("status", { status, transport: this.transport });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
