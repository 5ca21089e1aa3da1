"""`ticker bench ingest`: both ways in run end to end on a small size and come out exact.

Speeds are reported, never asserted."""

import json
import subprocess
import sys

from tests.conftest import UNIT


def test_bench_ingest_reports_both_ways_in_exact() -> None:
    """The producer and HTTP rows each count every order once, with their rates and targets."""
    argv = [sys.executable, "-m", "ticker", "bench", "ingest", "--orders", "6000", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300 * UNIT, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    ingest = json.loads(done.stdout.strip().splitlines()[-1])["ingest"]
    for way in ("producer", "http"):
        row = ingest[way]
        assert (row["exact"], row["orders_total"], row["failed_checks"]) == (True, 6000, []), row
        assert row["gmv_fen"] == row["gmv_fen_expected"] and row["orders_per_s"] > 0
    assert ingest["http"]["requests"] == 2 and ingest["http"]["accepted"] == 6000
    assert [t["met"] is not None for t in ingest["targets"]] == [True, True]
