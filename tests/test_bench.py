"""`ticker bench all --quick --json`: every benchmark runs, reports its figures, is exact.

Speeds are reported, never asserted: this machine's load is not the code's doing.
"""

import json
import subprocess
import sys

from tests.conftest import UNIT


def test_bench_all_quick_reports_every_figure_and_exact_totals() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ticker", "bench", "all", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600 * UNIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ok"] is True
    assert out["redis_private"] is True
    assert {"date", "machine", "redis", "load_average_before"} <= out.keys()

    pipeline = out["pipeline"]
    for side in ("real", "naive"):
        assert pipeline[side]["exact"] is True, pipeline[side]
        assert pipeline[side]["orders"] > 0
        assert pipeline[side]["orders_per_s"] > 0
    assert pipeline["ratio"] > 0
    assert {t["what"] for t in pipeline["targets"]} >= {"real / naive"}

    day = out["day"]
    assert day["exact"] is True
    assert day["gmv_fen"] == day["gmv_fen_expected"]
    assert day["orders_total"] == day["orders_total_expected"]
    assert day["duplicates"] == 0 and day["dead_letters"] == 0
    assert day["redis_used_memory_peak_info_mb"] > 0
    assert {"aggregator", "replay"} <= day["process_peak_rss_mb"].keys()

    latency = out["latency"]
    assert latency["exact"] is True
    assert latency["batches"] > 0
    for part in ("write_to_client_ms", "feed_to_client_ms", "write_to_feed_ms"):
        assert latency[part]["n"] == latency["batches"], (part, latency[part])
        assert latency[part]["p50"] <= latency[part]["p99"] <= latency[part]["max"]
    # A batch reaches the client after it reached the feed (same clock, same machine).
    assert latency["feed_to_client_ms"]["p50"] <= latency["write_to_client_ms"]["p50"]

    scaling = out["scaling"]
    assert scaling["exact"] is True
    assert [r["batch_size"] for r in scaling["by_batch_size"]] == [1000, 4000]
    assert all(r["exact"] for r in scaling["by_batch_size"])
    assert [r["clients"] for r in scaling["latency_by_clients"]] == [1, 10]
    for row in scaling["latency_by_clients"]:
        assert row["write_to_client_ms"]["n"] == row["batches"] * row["clients"]
