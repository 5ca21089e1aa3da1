"""Fixtures for the browser tests: one headless Chromium, and a fresh tab per test."""

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from tests.conftest import UNIT, Ticker
from ticker import feed
from ticker.bench.page import CHROMIUM_ARGS, VIEWPORT
from ticker.keys import Keys

CHROMIUM = os.environ.get("TICKER_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

# Installed before the page's own script: records every distinct text the watched
# elements show, in order, so a test sees each value the counter took (not a sample).
RECORDER = """
(() => {
  const ids = ["gmv", "orders", "clock", "status"];
  const seen = Object.fromEntries(ids.map((id) => [id, []]));
  window.__seen = seen;
  const record = () => {
    for (const id of ids) {
      const node = document.getElementById(id);
      if (!node) continue;
      const h = seen[id];
      const text = node.textContent;
      if (h.length === 0 || h[h.length - 1] !== text) h.push(text);
    }
  };
  new MutationObserver(record).observe(document,
    { subtree: true, childList: true, characterData: true });
})();
"""


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Chromium; the tests fail (never skip) when it is not installed."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) "
            "or point TICKER_TEST_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def yuan(text: str) -> int:
    """The whole number in a display text such as '¥213,500,000' or '1,042,000'."""
    digits = re.sub(r"\D", "", text)
    assert digits, f"no number in {text!r}"
    return int(digits)


@dataclass
class Tab:
    """A page at 1280x800 with its console errors collected."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.wait_status("live")

    def text(self, element_id: str) -> str:
        return self.page.locator(f"#{element_id}").text_content() or ""

    def seen(self, element_id: str) -> list[str]:
        """Every distinct text the element showed, in order (see RECORDER)."""
        return list(self.page.evaluate(f"window.__seen[{element_id!r}]"))

    def wait(self, expression: str, timeout: float = 30) -> None:
        self.page.wait_for_function(expression, timeout=timeout * UNIT * 1000)

    def wait_status(self, status: str, timeout: float = 15) -> None:
        self.wait(f"document.getElementById('status').textContent === {status!r}", timeout)

    def wait_ended(self, timeout: float = 30) -> None:
        self.wait("document.body.dataset.ended === 'true'", timeout)

    def milestone_ids(self) -> list[str]:
        return list(
            self.page.eval_on_selector_all(
                "#milestones li[data-id]", "els => els.map((e) => e.dataset.id)"
            )
        )

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        png = self.page.screenshot(path=str(path))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        size = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert size == (VIEWPORT["width"], VIEWPORT["height"])
        return path


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(30_000 * UNIT)
    context.add_init_script(RECORDER)
    page = context.new_page()
    t = Tab(page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            t.errors.append(f"console: {msg.text}")

    def on_pageerror(exc: Error) -> None:
        t.errors.append(f"pageerror: {exc}")

    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    try:
        yield t
    finally:
        context.close()


@pytest.fixture
def feed_redis(ticker: Ticker) -> Iterator["redis.Redis[bytes]"]:
    """A client of the test Redis, to write feed entries as the aggregator does."""
    r: redis.Redis[bytes] = redis.Redis.from_url(ticker.redis_url)
    yield r
    r.close()


def write(r: "redis.Redis[bytes]", keys: Keys, fired: list[str], **state: Any) -> str:
    """Append a feed entry as the aggregator does; its position."""
    u = {**feed.EMPTY_STATE, "run": "r1", **state, "fired": [{"id": f} for f in fired]}
    return str(r.xadd(keys.feed, {"u": orjson.dumps(u)}).decode())  # type: ignore[union-attr]
