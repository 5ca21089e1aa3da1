"""`ticker replay --metrics-port`: the replay's own Prometheus endpoint while it runs."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import Ticker, stop, wait_http
from tests.ops.test_aggregator_metrics import wait_for
from ticker.redis_io import free_port


@contextmanager
def replaying(ticker: Ticker, *options: str) -> Iterator[str]:
    """`ticker replay --metrics-port` on a free port; the URL of its /metrics."""
    port = free_port()
    argv = ["replay", "--scale", "0.001", "--quiet", "--metrics-port", str(port), *options]
    proc: subprocess.Popen[str] = ticker.start(*argv)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http(url, timeout=30)
        yield url
    finally:
        stop(proc)


def test_replay_metrics_show_what_it_wrote_its_clock_and_state(ticker: Ticker) -> None:
    """While a paced replay runs: orders and GMV written, simulated time, speeds, state."""
    agg = ticker.start("aggregate")
    try:
        with replaying(ticker, "--speed", "60") as url:
            s = wait_for(url, lambda s: s["ticker_replay_sim_time_seconds"] >= 5)
    finally:
        stop(agg)
    assert s["ticker_replay_orders_written_total"] > 0
    assert s["ticker_replay_gmv_written_fen_total"] > s["ticker_replay_orders_written_total"]
    assert s["ticker_replay_batches_written_total"] > 0
    assert s["ticker_replay_speed"] == 60 and s["ticker_replay_behind_seconds"] >= 0
    states = {k: v for k, v in s.items() if k.startswith("ticker_replay_state{")}
    assert sorted(states.values()) == [0, 0, 0, 1]
    assert states['ticker_replay_state{state="ended"}'] == 0


def test_a_replay_waiting_for_the_aggregators_says_so(ticker: Ticker) -> None:
    """With no aggregator taking the orders, the state turns to waiting with a backlog."""
    with replaying(ticker, "--speed", "max") as url:
        s = wait_for(url, lambda s: s['ticker_replay_state{state="waiting"}'] == 1)
    assert s["ticker_replay_backlog_entries"] > 0
    assert s["ticker_replay_speed"] == 0  # as fast as possible
