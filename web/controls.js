// The replay control: the replay's state as a chip, and for an operator (a page opened with
// a control token) pause, resume, speed and seek, each confirmed by the replay itself.

import { el, setData, setHidden, setText, setTitle } from "./dom.js";
import { fmtClock, fmtInt, parseClock } from "./format.js";
import { state } from "./store.js";

const setDisabled = (node, off) => node.disabled !== off && (node.disabled = off);

let token = ""; // the control token ("" = a viewer: no controls)

// What the replay can do now: "running", "paused", "ended", "stopped" (it stopped
// beating) or "none" (no replay reports). The day's end (state.ended) wins over a
// replay status that has not caught up.
export function replayState() {
  if (!state) return "none";
  if (state.ended === true) return "ended";
  const r = state.replay;
  if (!r || typeof r !== "object") return "none";
  return ["running", "paused", "ended", "stopped"].includes(r.state) ? r.state : "none";
}

let ctlPending = false; // a command is on its way to the server
let ctlAwait = null; // the replay state a sent command should lead to, and its message

export function renderReplay() {
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
  setData(el.replayChip, "state", rs);
  setTitle(el.replayChip, rs === "running" || rs === "paused" ? "Replay " + rs + ", speed " + speed : text);
  // The "Replay ended" chip says it once the day is over.
  setHidden(el.replayChip, (rs === "ended" && state.ended === true) || state.profile === "live");
  setData(document.body, "replay", rs);

  const obeys = rs === "running" || rs === "paused";
  const action = rs === "paused" ? "resume" : "pause";
  setText(el.ctlPause, action === "resume" ? "Resume" : "Pause");
  setData(el.ctlPause, "action", action);
  setDisabled(el.ctlPause, !obeys || ctlPending);
  setDisabled(el.ctlSpeed, !obeys || ctlPending);
  setDisabled(el.ctlSeek, !obeys);
  setDisabled(el.ctlSeekGo, !obeys || ctlPending);
  setData(el.controls, "replay", rs);
  if ("speed" in r && document.activeElement !== el.ctlSpeed) {
    const v = r.speed == null ? "max" : String(r.speed);
    if (![...el.ctlSpeed.options].some((o) => o.value === v)) {
      // a speed set elsewhere (`ticker control speed 3000`): show it as it is
      const o = document.createElement("option");
      o.value = v;
      o.textContent = fmtInt(Number(v)) + "×";
      el.ctlSpeed.insertBefore(o, [...el.ctlSpeed.options].find((x) => x.value === "max" || Number(x.value) > Number(v)) || null);
    }
    if (el.ctlSpeed.value !== v) el.ctlSpeed.value = v;
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

// Show the controls and wire them; only a page opened with a control token has them.
export function installControls(controlToken) {
  token = controlToken;
  if (!token) return;
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
