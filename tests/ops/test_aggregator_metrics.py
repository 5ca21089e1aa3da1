"""`ticker aggregate --metrics-port`: the aggregator's own Prometheus endpoint."""

import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.conftest import UNIT, Ticker, stop, wait_http
from ticker.redis_io import free_port

Samples = dict[str, float]


def scrape(url: str) -> Samples:
    """The samples of a Prometheus text page, keyed by name with labels."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    rows = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in rows}


def wait_for(url: str, ready: Callable[[Samples], bool]) -> Samples:
    """Scrape until `ready` says so (or a generous timeout); the last scrape."""
    deadline = time.monotonic() + 60 * UNIT
    samples = scrape(url)
    while not ready(samples) and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(url)
    return samples


@contextmanager
def aggregating(ticker: Ticker, *options: str) -> Iterator[str]:
    """`ticker aggregate --metrics-port` on a free port; the URL of its /metrics."""
    port = free_port()
    proc: subprocess.Popen[str] = ticker.start("aggregate", "--metrics-port", str(port), *options)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http(url)
        yield url
    finally:
        stop(proc)


def replay(ticker: Ticker, *options: str) -> None:
    done = ticker.run("replay", "--scale", "0.001", "--speed", "max", "--quiet", *options)
    assert done.returncode == 0, done.stderr


def test_aggregator_metrics_count_what_it_applied_and_committed(ticker: Ticker) -> None:
    """After a miniature day: orders, entries, commits and timed rounds; nothing left."""
    with aggregating(ticker) as url:
        replay(ticker)
        s = wait_for(
            url,
            lambda s: (
                s['ticker_aggregator_stream_lag_entries{shard="0"}'] == 0
                and s['ticker_aggregator_stream_pending_entries{shard="0"}'] == 0
                and s["ticker_aggregator_commits_total"] > 0
            ),
        )
    assert s["ticker_aggregator_applied_orders_total"] > 0
    assert s["ticker_aggregator_applied_entries_total"] > 0
    assert s["ticker_aggregator_round_seconds_count"] >= s["ticker_aggregator_commits_total"]
    assert s['ticker_aggregator_dead_letters{shard="0"}'] == 0
    assert s["ticker_aggregator_redis_up"] == 1


def test_sharded_aggregator_metrics_report_every_shard(ticker: Ticker) -> None:
    """With --shards 2, the committed orders, commits and backlog come per shard."""
    with aggregating(ticker, "--shards", "2") as url:
        replay(ticker, "--shards", "2")
        s = wait_for(
            url,
            lambda s: all(
                s.get(f'ticker_aggregator_stream_lag_entries{{shard="{i}"}}', -1) == 0
                and s.get(f'ticker_aggregator_stream_pending_entries{{shard="{i}"}}', -1) == 0
                for i in (0, 1)
            ),
        )
    for i in (0, 1):
        assert s[f'ticker_aggregator_shard_orders_total{{shard="{i}"}}'] > 0
        assert s[f'ticker_aggregator_shard_commits_total{{shard="{i}"}}'] > 0
        assert s[f'ticker_aggregator_gaps{{shard="{i}"}}'] == 0
        assert s[f'ticker_aggregator_held_entries{{shard="{i}"}}'] == 0
