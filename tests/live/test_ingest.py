"""`ticker ingest`: a shop's exported orders into the live run, through real processes."""

import signal
from pathlib import Path

from tests.conftest import UNIT, Ticker, stop
from tests.live.test_live_run import DAY, _live, _state, wait_for


def _ingest(ticker: Ticker, path: Path, *options: str) -> tuple[int, str, str]:
    agg = ticker.start("aggregate", "--burst")
    try:
        done = ticker.run("ingest", str(path), *options)
        assert ticker.run("live", "end").returncode == 0
        assert agg.wait(60 * UNIT) == 0, ticker.output(agg)
    finally:
        stop(agg)
    return done.returncode, done.stdout, done.stderr


def test_a_csv_with_a_column_mapping_is_counted_exactly(ticker: Ticker, tmp_path: Path) -> None:
    """Columns named order_no/time/total: 300 orders, RMB 3,000.00, by category."""
    rows = ["order_no,time,total,cat"]
    rows += [f"n{i},{DAY}T09:{i % 60:02d}:00Z,10.00,{'AB'[i % 2]}" for i in range(300)]
    (path := tmp_path / "day.csv").write_text("\n".join(rows) + "\n")
    _live(ticker)
    maps = ("--map", "id=order_no", "--map", "paid_at=time", "--map", "amount=total")
    code, _, err = _ingest(ticker, path, *maps, "--map", "category=cat", "--quiet")
    state = _state(ticker)
    assert (code, state.orders, state.gmv_fen) == (0, 300, 300_000), err
    assert {c["name"]: c["orders"] for c in state.view()["top_categories"]} == {"A": 150, "B": 150}


def test_a_bad_line_is_reported_with_its_number_and_the_rest_is_taken(
    ticker: Ticker, tmp_path: Path
) -> None:
    """Line 2 has a float amount: exit 1 naming line 2 and the field; lines 1 and 3 count."""
    lines = [
        f'{{"id": "a", "paid_at": "{DAY}T09:00:00Z", "amount": "1.00"}}',
        f'{{"id": "b", "paid_at": "{DAY}T09:00:01Z", "amount": 2.5}}',
        f'{{"id": "c", "paid_at": "{DAY}T09:00:02Z", "amount": 300}}',
    ]
    (path := tmp_path / "day.ndjson").write_text("\n".join(lines) + "\n")
    _live(ticker)
    code, _, err = _ingest(ticker, path, "--speed", "600", "--quiet")
    assert (code, _state(ticker).gmv_fen) == (1, 400)
    assert "line 2: amount: must be a decimal string" in err


def test_the_progress_bar_shows_orders_and_money(ticker: Ticker, tmp_path: Path) -> None:
    """The final progress line says 100%, the orders and the amount in the currency."""
    line = f'{{"id": "a", "paid_at": "{DAY}T09:00:00Z", "amount": "12.34"}}\n'
    (path := tmp_path / "one.ndjson").write_text(line)
    _live(ticker)
    _, _, err = _ingest(ticker, path)
    assert "100%  1 orders  CNY 12.34" in err


def test_an_ingest_killed_midway_and_run_again_counts_every_order_once(
    ticker: Ticker, tmp_path: Path
) -> None:
    """kill -9 of a paced ingest after some orders count; the same command again: exact."""
    lines = [
        f'{{"id": "n{i}", "paid_at": "{DAY}T09:{i // 600:02d}:{i // 10 % 60:02d}Z", "amount": 7}}'
        for i in range(3_000)
    ]
    (path := tmp_path / "day.ndjson").write_text("\n".join(lines) + "\n")
    _live(ticker)
    agg = ticker.start("aggregate", "--burst")
    try:
        first = ticker.start("ingest", str(path), "--speed", "100", "--batch-size", "50")
        wait_for(lambda: _state(ticker).orders >= 500, "part of the file counted")
        first.send_signal(signal.SIGKILL)
        first.wait()
        again = ticker.run("ingest", str(path), "--speed", "100", "--batch-size", "50")
        assert again.returncode == 0, again.stderr
        assert "more were written by an earlier run" in again.stdout
        assert ticker.run("live", "end").returncode == 0
        assert agg.wait(60 * UNIT) == 0
    finally:
        stop(agg)
    assert (_state(ticker).orders, _state(ticker).gmv_fen) == (3_000, 21_000)
