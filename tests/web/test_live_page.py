"""The page in Chromium showing a live event: real orders posted to `POST /api/orders`
and written by `ticker.producer`, aggregated and served by the real processes."""

import asyncio
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import Server, Ticker, serving, stop
from tests.live.test_live_run import _state, wait_for
from tests.web.conftest import Tab
from ticker.producer import Producer

TOKEN = "ingest-for-the-page"
EVENT = """
title = "Harbour Charity Drive"
day = "2026-11-27"
utc_offset = "+01:00"
home_country = "Norway"
currency = "NOK"
categories = ["Books"]
milestones = [{ amount = "1000", label = "First thousand raised" }, { orders = 1000000 }]
"""
# By HTTP: 1,050.50; by the producer: 200.25. None of the names but "Books" is in a list.
POSTED = [
    {"id": "h1", "paid_at": "2026-11-27T10:00:00+01:00", "amount": "250.00",
     "category": "Books", "seller_country": "Portugal", "buyer_region": "Oslo"},
    {"id": "h2", "paid_at": "2026-11-27T10:05:00+01:00", "amount": "500.50",
     "category": "Tea", "brand": "Leaf & Co", "seller_country": "Portugal"},
    {"id": "h3", "paid_at": "2026-11-27T10:07:00+01:00", "amount": 30000, "category": "Tea"},
]  # fmt: skip
PRODUCED = [
    {"id": "p1", "paid_at": "2026-11-27T10:09:30+01:00", "amount": "200.25",
     "category": "Umbrellas", "brand": "Leaf & Co", "buyer_region": "Bergen"},
]  # fmt: skip
TOTAL_FEN = 125_075
TOTAL = "NOK 1,250"  # the event's currency, whole units (never rounded up)


def _post(url: str, orders: list[dict[str, object]]) -> int:
    body = b"\n".join(orjson.dumps(o) for o in orders)
    request = urllib.request.Request(
        url + "api/orders",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return int(r.status)


async def _produce(ticker: Ticker) -> None:
    async with Producer(ticker.redis_url, ticker.namespace, "till-1") as p:
        await p.add_many(PRODUCED)


@pytest.fixture(scope="module")
def event(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A live event open, aggregated and served, with every order in and counted."""
    ticker = Ticker(redis_url, f"t{uuid.uuid4().hex[:10]}")
    path = Path(tmp_path_factory.mktemp("event")) / "event.toml"
    path.write_text(EVENT)
    assert ticker.run("live", "start", str(path)).returncode == 0
    agg = ticker.start("aggregate")
    try:
        with serving(ticker, "--ingest-token", TOKEN) as server:
            assert _post(server.url, POSTED) == 202
            # (in a thread: Playwright's loop runs in this one)
            writer = threading.Thread(target=asyncio.run, args=(_produce(ticker),))
            writer.start()
            writer.join()
            wait_for(lambda: _state(ticker).orders == 4, "the four orders applied")
            yield server
    finally:
        stop(agg)
        ticker.close()


def test_a_live_event_shows_its_title_and_exact_total(event: Server, tab: Tab) -> None:
    """The page heads with the event's title and shows the exact total of every order in."""
    tab.open(event.url)
    tab.wait(f"document.getElementById('gmv').textContent === {TOTAL!r}")
    assert tab.page.evaluate("window.tickerState.gmv_fen") == TOTAL_FEN
    assert tab.text("title") == "Harbour Charity Drive"
    assert tab.text("orders") == "4"
    assert tab.text("clock") == "10:09:30"
    assert tab.text("cur-rmb") == "NOK"  # the event's currency names its button
    tab.screenshot("live-event.png")
    assert tab.errors == []


def test_a_live_event_lists_the_milestone_it_crossed(event: Server, tab: Tab) -> None:
    """The amount milestone crossed by the posted orders is listed with its label."""
    tab.open(event.url)
    tab.wait("document.querySelectorAll('#milestones li[data-id]').length === 1")
    assert "First thousand raised" in tab.page.locator("#milestones").inner_text()
    assert "10:07:00" in tab.page.locator("#milestones").inner_text()


def test_a_live_event_shows_names_that_were_in_no_list(event: Server, tab: Tab) -> None:
    """Categories, brands and countries first seen in the orders are shown by name."""
    tab.open(event.url)
    tab.wait("document.getElementById('top-categories').textContent.includes('Umbrellas')")
    categories = tab.page.locator("#top-categories").inner_text()
    assert categories.index("Tea") < categories.index("Books") < categories.index("Umbrellas")
    assert "Leaf & Co" in tab.text("top-brands")
    assert "Portugal" in tab.page.locator("#top-countries").inner_text()


def test_a_live_event_is_not_labelled_as_a_festival_replay(event: Server, tab: Tab) -> None:
    """No 11.11 mark, no replay chip, the event's clock, no last-year key without a curve."""
    tab.open(event.url)
    tab.wait(f"document.getElementById('gmv').textContent === {TOTAL!r}")
    for selector in (".brand-mark", "#replay-chip", ".key-last", "#brands-over"):
        assert not tab.page.locator(selector).is_visible(), selector
    clock_label = tab.page.locator("#clock").locator("xpath=..").locator(".muted")
    assert clock_label.text_content() == "event time"
    assert tab.page.locator(".key-now").inner_text() == "today"
