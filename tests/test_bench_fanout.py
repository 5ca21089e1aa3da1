"""`ticker bench fanout`: one load generator drives the ticker, nginx + nchan and a
`websockets.broadcast` server with the same message; a few clients, a second each.

Speeds are reported, never asserted: this machine's load is not the code's doing.
"""

import io
import json
from contextlib import redirect_stdout

import pytest

from ticker.bench import peers
from ticker.bench.fanout import run_fanout
from ticker.bench.loadgen import LoadSpec
from ticker.cli import main

SMALL = LoadSpec(procs=1, nap=0.005, nice=0)


@pytest.mark.skipif(peers.nchan_module() is None, reason=peers.NCHAN_INSTALL)
def test_every_peer_serves_the_same_message_to_the_same_clients(redis_url: str) -> None:
    """Each peer's clients get messages, no more than published, all of the same size."""
    result = run_fanout(redis_url, [10], [10.0], 1.0, [], SMALL)
    rows = {r["peer"]: r for r in result["rows"]}
    assert rows.keys() == {"ticker", "nchan", "websockets"} and not result["skipped"]
    for r in rows.values():
        assert r["connected"] == 10 and r["loadgen_errors"] == {}, r
        assert 0 < r["delivered"] <= r["expected"], r
    assert len({r["payload_bytes_per_msg"] for r in rows.values()}) == 1


def test_a_missing_nchan_is_skipped_with_how_to_install_it(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the nchan module the peer is skipped, and the report names the package."""
    monkeypatch.setattr(peers, "NCHAN_MODULE_PATHS", ("/nonexistent/ngx_nchan_module.so",))
    result = run_fanout(redis_url, [10], [10.0], 1.0, [], SMALL, peers=["nchan"])
    assert result["rows"] == []
    assert "apt-get install -y libnginx-mod-nchan" in result["skipped"]["nchan"]


def test_delta_runs_the_ticker_again_with_delta_subscriptions(redis_url: str) -> None:
    """`--delta` adds a ticker row whose clients subscribed with delta: true."""
    out = io.StringIO()
    argv = ["bench", "fanout", "--json", "--peers", "ticker", "--delta", "--rates", "10"]
    with redirect_stdout(out):
        code = main([*argv, "--client-counts", "5", "--duration", "1", "--redis-url", redis_url])
    assert code == 0
    rows = json.loads(out.getvalue().strip().splitlines()[-1])["fanout"]["rows"]
    assert [(r["peer"], r["delta"]) for r in rows] == [("ticker", False), ("ticker+delta", True)]
    assert all(0 < r["delivered"] <= r["expected"] for r in rows)
