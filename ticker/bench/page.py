"""Page: how busy the web page keeps a browser's main thread while the ticker runs.

Method. A private aggregator, server and replay run as in the other benchmarks (at 1x from
the midnight peak, 00:00, at full scale; at 1200x at 1/1000 scale, where the whole day
passes in 72 s). The page is opened in headless Chromium with software rendering (no GPU:
a TV stick or a cheap phone draws much as this does), waits until it shows "live", settles
for a few seconds, then for the measured window the DevTools Performance domain's counters
are read at its start and end: TaskDuration is the wall time the renderer's main thread
spent in tasks, so its delta over the window's wall time is the **main-thread busy
fraction**; ScriptDuration, LayoutDuration and RecalcStyleDuration are its parts in
script, layout and style; ThreadTime is the main thread's CPU time (on a loaded machine
busy wall time includes time the thread waited for a core; CPU time does not). Frames are
counted with requestAnimationFrame callbacks the page itself asked for on its main thread
(a wrapper counts them; it adds no frames; the map's arcs fly on a worker's own frames,
which are not counted), and every Chromium process's CPU comes from SystemInfo.

`hidden` runs the same window with the tab in the background, as a viewer who switched
away: the page should then do almost nothing. Headless Chromium never hides a tab, so the
document is made to say "hidden" (and fires visibilitychange) and the page's animation
frames stop, as they do in a real background tab; its timers and websocket still run.
"""

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from ticker.bench.common import Proc, drop_namespace, fresh_namespace, ticker_args
from ticker.bench.pipeline import BenchFailed, _wait_for_group, wait_http
from ticker.core.clock import DAY_MS, format_time_of_day
from ticker.redis_io import free_port

CHROMIUM = "/usr/bin/chromium"
# Software rendering: no GPU process drawing on a graphics card.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
SETTLE_S = 3.0  # after "live": the first snapshot's layout and the curve fetch are left out

# Counts the animation frames the page asks for, without asking for any itself. Once the
# tab is "hidden" (below) it runs no more of them, as Chromium does for a background tab.
FRAME_COUNTER = """
(() => {
  const raf = window.requestAnimationFrame.bind(window);
  window.__benchFrames = 0;
  window.requestAnimationFrame = (cb) => raf((t) => {
    if (window.__benchHidden) return;
    window.__benchFrames++;
    cb(t);
  });
})();
"""
# Headless Chromium keeps every tab visible, even one behind another tab, so a background
# tab is emulated: the document says it is hidden, and tells the page as a browser would.
HIDE = """
(() => {
  window.__benchHidden = true;
  Object.defineProperty(document, "visibilityState", { get: () => "hidden", configurable: true });
  Object.defineProperty(document, "hidden", { get: () => true, configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
})();
"""

METRICS = (
    "TaskDuration",
    "ScriptDuration",
    "LayoutDuration",
    "RecalcStyleDuration",
    "ThreadTime",
    "LayoutCount",
    "RecalcStyleCount",
    "JSHeapUsedSize",
    "Nodes",
)


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _chromium_cpu_s(browser_cdp: Any) -> dict[str, float]:
    """CPU seconds so far of each Chromium process, summed by type (browser, renderer...)."""
    out: dict[str, float] = {}
    try:
        info = browser_cdp.send("SystemInfo.getProcessInfo")
    except Exception:  # an older Chromium without the method: the figure is left out
        return out
    for p in info.get("processInfo", []):
        out[p["type"]] = out.get(p["type"], 0.0) + float(p["cpuTime"])
    return out


@contextlib.contextmanager
def _pipeline(url: str, speed: float, scale: str, to_ms: int) -> Iterator[str]:
    """Aggregator, server and a replay from 00:00 at `speed`; yields the page's address."""
    ns = fresh_namespace("page")
    port = free_port()
    procs: list[Proc] = []
    try:
        agg = Proc.start("aggregator", ticker_args(url, ns, "aggregate", "--name", "bench"))
        procs.append(agg)
        server = Proc.start("server", ticker_args(url, ns, "serve", "--port", str(port)))
        procs.append(server)
        _wait_for_group(url, ns, agg)
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        to = format_time_of_day(to_ms, millis=False)
        replay = ["replay", "--speed", f"{speed:g}", "--scale", scale, "--to", to, "--quiet"]
        procs.append(Proc.start("replay", ticker_args(url, ns, *replay)))
        yield f"http://127.0.0.1:{port}/"
        for p in procs:
            if p.popen.poll() not in (None, 0):
                raise BenchFailed(f"{p.name} exited:\n{p.output()}")
    finally:
        for p in reversed(procs):
            p.stop()
        drop_namespace(url, ns)


def _measure(
    browser: Any, page_url: str, window_s: float, hidden: bool, profile: str | None
) -> dict[str, Any]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    try:
        context.add_init_script(FRAME_COUNTER)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_url)
        page.wait_for_function(
            "document.getElementById('status').textContent === 'live'", timeout=60_000
        )
        if hidden:
            page.evaluate(HIDE)
        time.sleep(SETTLE_S)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        if profile:
            cdp.send("Profiler.enable")
            cdp.send("Profiler.setSamplingInterval", {"interval": 200})
            cdp.send("Profiler.start")
        browser_cdp = browser.new_browser_cdp_session()
        load = os.getloadavg()[0]
        cpu0 = _chromium_cpu_s(browser_cdp)
        m0, frames0, t0 = _metrics(cdp), page.evaluate("window.__benchFrames"), time.monotonic()
        time.sleep(window_s)
        m1, frames1, t1 = _metrics(cdp), page.evaluate("window.__benchFrames"), time.monotonic()
        cpu1 = _chromium_cpu_s(browser_cdp)
        if profile:
            import json

            with open(profile, "w") as f:
                json.dump(cdp.send("Profiler.stop")["profile"], f)
        status = page.evaluate("document.getElementById('status').textContent")
        visibility = page.evaluate("document.visibilityState")
    finally:
        context.close()
    wall = t1 - t0

    def share(name: str) -> float:
        return round((m1[name] - m0[name]) / wall, 4)

    return {
        "window_s": round(wall, 2),
        "load_average_1m": round(load, 2),  # busy time includes waiting for a core
        "visibility": visibility,
        "status_at_end": status,
        "main_thread_busy": share("TaskDuration"),
        "script": share("ScriptDuration"),
        "layout": share("LayoutDuration"),
        "recalc_style": share("RecalcStyleDuration"),
        "main_thread_cpu": share("ThreadTime"),
        "layouts_per_s": round((m1["LayoutCount"] - m0["LayoutCount"]) / wall, 1),
        "style_recalcs_per_s": round((m1["RecalcStyleCount"] - m0["RecalcStyleCount"]) / wall, 1),
        "frames_per_s": round((frames1 - frames0) / wall, 1),
        "js_heap_mb_start": round(m0["JSHeapUsedSize"] / 2**20, 2),
        "js_heap_mb_end": round(m1["JSHeapUsedSize"] / 2**20, 2),
        "dom_nodes_end": int(m1["Nodes"]),
        # every Chromium process (browser, renderer, GPU/compositor): cores used
        "chromium_cpu_by_process": {
            k: round((cpu1.get(k, 0.0) - v) / wall, 3) for k, v in cpu0.items()
        },
        "page_errors": errors,
    }


def run_page(
    url: str,
    speeds: list[float],
    window_s: float,
    hidden: bool = False,
    scale_1x: str = "1",
    scale_fast: str = "1/1000",
    profile: str | None = None,
) -> dict[str, Any]:
    """The page's main-thread figures at each replay speed (visible, and hidden if asked)."""
    from playwright.sync_api import sync_playwright

    rows: list[dict[str, Any]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for speed in speeds:
                scale = scale_1x if speed <= 1 else scale_fast
                # long enough for start-up, "live", the settle and the window, at this speed
                to_ms = min(DAY_MS, int((window_s + SETTLE_S + 60) * speed * 1000))
                for hide in (False, True) if hidden else (False,):
                    with _pipeline(url, speed, scale, to_ms) as page_url:
                        prof = None
                        if profile:
                            prof = f"{profile}-{speed:g}x{'-hidden' if hide else ''}.cpuprofile"
                        r = _measure(browser, page_url, window_s, hide, prof)
                    rows.append({"speed": speed, "scale": scale, "hidden": hide, **r})
        finally:
            browser.close()
    out: dict[str, Any] = {
        "command": "ticker aggregate & ticker serve & ticker replay --from 00:00 --speed S; "
        f"page in headless Chromium (--disable-gpu), {VIEWPORT['width']}x{VIEWPORT['height']}",
        "method": "CDP Performance.getMetrics deltas over the window / wall time",
        "rows": rows,
        "exact": all(not r["page_errors"] and r["status_at_end"] == "live" for r in rows),
    }
    return out


def print_table(r: dict[str, Any]) -> None:
    print("\n== page: main thread of the page in headless Chromium (software rendering)")
    print(f"  {r['command']}")
    head = (
        f"  {'speed':>6} {'hidden':>6} {'busy':>6} {'script':>6} {'layout':>6} {'style':>6} "
        f"{'cpu':>6} {'frames/s':>8} {'layouts/s':>9} {'heap MB':>11} "
        f"{'chromium cores':>14} {'load':>5}"
    )
    print(head)
    for row in r["rows"]:
        cores = sum(row["chromium_cpu_by_process"].values())
        heap = f"{row['js_heap_mb_start']:.1f}->{row['js_heap_mb_end']:.1f}"
        print(
            f"  {row['speed']:>5g}x {row['hidden']!s:>6} {row['main_thread_busy']:>6.1%} "
            f"{row['script']:>6.1%} {row['layout']:>6.1%} {row['recalc_style']:>6.1%} "
            f"{row['main_thread_cpu']:>6.1%} {row['frames_per_s']:>8.1f} "
            f"{row['layouts_per_s']:>9.1f} {heap:>11} {cores:>14.2f} "
            f"{row['load_average_1m']:>5.1f}"
        )
        if row["page_errors"]:
            print(f"         page errors: {row['page_errors'][:3]}")
