"""Fixtures: a private redis-server on a free port, and the ticker's real processes."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

from ticker.procs import terminate
from ticker.redis_io import embedded_redis, free_port

# Every wait in the tests is a multiple of this, so a slow machine can scale them all.
UNIT = float(os.environ.get("TICKER_TEST_TIMEOUT_UNIT", "1.0"))

# The suite runs on several pytest-xdist workers (`--dist loadgroup`, see tests/run); each
# worker has its own session fixtures (its own redis-server, its own Chromium). Tests that
# share a rig costlier than their own run (the six-node cluster, a day replayed once for a
# module) run on one worker, so each rig is built once: these fixtures name their group.
SHARED_RIGS = {
    "redis_cluster": "cluster",
    "reference": "cluster",  # tests/cluster/test_sharding.py: the single-stream day
    "ended": "journey-ended",  # tests/web/test_journey.py: a day replayed to its end
    "day": "bigscreen-day",  # tests/web/test_bigscreen.py: a day watched by one page
    "image": "image",  # tests/ops/test_image.py: the image's install steps, run once
    "page_bench": "page-bench",  # tests/test_bench_page.py: one `ticker bench page` run
    "watched_day": "pipeline-day",  # tests/test_pipeline.py: a day a websocket client watched
    "event": "live-event",  # tests/web/test_live_page.py: a live event with its orders in
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        groups = sorted({SHARED_RIGS[n] for n in names if n in SHARED_RIGS})
        if groups:
            item.add_marker(pytest.mark.xdist_group(groups[0]))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server of the tests' own (never the shared one on 6379)."""
    with embedded_redis() as url:
        yield url


@pytest.fixture
def namespace() -> str:
    """A fresh ticker namespace, so tests sharing the server never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class Ticker:
    """Runs `ticker` subcommands as real processes against the test Redis."""

    redis_url: str
    namespace: str
    logs: dict[int, IO[str]] = field(default_factory=dict)

    def args(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ticker",
            *args,
            "--redis-url",
            self.redis_url,
            "--namespace",
            self.namespace,
        ]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(*args), capture_output=True, text=True, timeout=timeout * UNIT, check=False
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start a subcommand; its output goes to a temporary file (see `output`)."""
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by close())
        proc = subprocess.Popen(self.args(*args), stdout=log, stderr=subprocess.STDOUT, text=True)
        self.logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        log = self.logs[proc.pid]
        log.seek(0)
        return log.read()

    def close(self) -> None:
        for log in self.logs.values():
            log.close()

    def miniature_day(self, *extra: str, timeout: float = 120) -> None:
        """Replay a 1/1000 day at max speed and aggregate it to the end."""
        agg = self.start("aggregate", "--burst")
        try:
            replay = self.run(
                "replay", "--scale", "0.001", "--speed", "max", "--quiet", *extra, timeout=timeout
            )
            assert replay.returncode == 0, replay.stderr
            agg.wait(timeout * UNIT)
            assert agg.returncode == 0, self.output(agg)
        finally:
            stop(agg)


@pytest.fixture
def ticker(redis_url: str, namespace: str) -> Iterator[Ticker]:
    t = Ticker(redis_url, namespace)
    yield t
    t.close()


def stop(proc: "subprocess.Popen[Any]") -> None:
    """Terminate a process, killing it if it will not go."""
    terminate(proc, timeout=10 * UNIT)


def wait_http(url: str, timeout: float = 60, proc: "subprocess.Popen[Any] | None" = None) -> None:
    """Wait until `url` answers; fail at once if `proc` (the server) exits first."""
    deadline = time.monotonic() + timeout * UNIT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}) first") from exc
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "ws"


@contextlib.contextmanager
def serving(ticker: Ticker, *options: str, port: int | None = None) -> Iterator[Server]:
    """`ticker serve` on a free port of 127.0.0.1 (or `port`), with the given options."""
    port = port or free_port()
    proc = ticker.start("serve", "--port", str(port), *options)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url + "healthz", proc=proc)
        yield Server(url, proc)
    finally:
        stop(proc)


@pytest.fixture
def server(ticker: Ticker) -> Iterator[Server]:
    """`ticker serve` on a free port of 127.0.0.1."""
    with serving(ticker) as s:
        yield s
