"""`ticker bench page`: the page's main-thread figures in headless Chromium are reported.

Figures are checked for presence and sense, never for speed: the machine's load is not the
page's doing.
"""

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import UNIT


@pytest.fixture(scope="module")
def page_bench() -> dict[str, Any]:
    """One short run at 1200x (1/1000 scale), visible and hidden."""
    argv = [sys.executable, "-m", "ticker", "bench", "page", "--json", "--duration", "3"]
    argv += ["--speeds", "1200", "--hidden"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300 * UNIT, check=False)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1])["page"])


def test_visible_page_reports_busy_share_parts_frames_and_heap(page_bench: dict[str, Any]) -> None:
    """The visible row has a busy share in (0, 1], its parts within it, frames and a heap."""
    row = next(r for r in page_bench["rows"] if not r["hidden"])
    assert 0 < row["main_thread_busy"] <= 1.05
    assert 0 < row["script"] + row["layout"] + row["recalc_style"] <= row["main_thread_busy"] + 0.01
    assert row["frames_per_s"] > 0 and row["js_heap_mb_end"] > 0
    assert row["status_at_end"] == "live" and row["page_errors"] == []


def test_hidden_page_runs_no_animation_frames(page_bench: dict[str, Any]) -> None:
    """With the tab hidden the page says so and draws no animation frame."""
    row = next(r for r in page_bench["rows"] if r["hidden"])
    assert row["visibility"] == "hidden"
    assert row["frames_per_s"] == 0
    assert 0 <= row["main_thread_busy"] <= 1.05
