"""Refresh docs/screenshots: `python3 -m tests.web.screenshots` (Chromium, a private Redis).

page.png and phone.png: the midnight rush of a 1:100 day at 10x, with the replay controls.
wall.png: a 3840x2160 wall opened late on a window replayed from 12:00 (the day before it
drawn, the milestones passed before it kept, the lists "since 12:00").
"""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from ticker.procs import terminate
from ticker.redis_io import embedded_redis, free_port

OUT = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"
TOKEN = "screenshots"


def start(redis_url: str, namespace: str, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "ticker", *args]
    command += ["--redis-url", redis_url, "--namespace", namespace]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def shoot(browser: Browser, url: str, name: str, width: int, height: int, until: str) -> None:
    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
    page.goto(url + "?token=" + TOKEN)
    page.wait_for_function(until, timeout=120_000)
    page.wait_for_timeout(1500)  # arcs in flight, counters settled
    page.screenshot(path=str(OUT / name))
    page.close()
    print("wrote", OUT / name)


def scene(browser: Browser, redis_url: str, namespace: str, replay: list[str], shots: list) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    procs = [start(redis_url, namespace, "serve", "--port", str(port), "--control-token", TOKEN)]
    procs.append(start(redis_url, namespace, "aggregate"))
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        procs.append(start(redis_url, namespace, "replay", "--quiet", *replay))
        for shot in shots:
            shoot(browser, url, *shot)
    finally:
        terminate(*procs, timeout=30)


def main() -> None:
    rush = (
        "document.getElementById('clock').textContent >= '00:03:00'"
        " && document.getElementById('banner').hidden"
    )
    late = (
        "document.getElementById('clock').textContent >= '15:55:00'"
        " && document.getElementById('banner').hidden"
    )
    with embedded_redis() as redis_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        scene(
            browser,
            redis_url,
            "rush",
            ["--scale", "0.01", "--speed", "10"],
            [("page.png", 1280, 800, rush), ("phone.png", 390, 844, rush)],
        )
        scene(
            browser,
            redis_url,
            "wall",
            ["--scale", "0.01", "--speed", "600", "--from", "12:00"],
            [("wall.png", 3840, 2160, late)],
        )
        browser.close()


if __name__ == "__main__":
    main()
