"""Fixtures for fault injection: a private, restartable redis-server with AOF on every
write, and the ticker's real processes that can be killed and started again."""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import redis

from tests.conftest import UNIT, stop
from ticker.core.aggregate import State
from ticker.keys import Keys
from ticker.procs import terminate
from ticker.redis_io import answers_soon, free_port


@dataclass
class RedisServer:
    """A redis-server on a fixed port and data dir: kill it, start it again, same data."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # It answers LOADING while it replays the append-only file: wait for a PONG.
        if not answers_soon(self.port, self.proc, 20 * UNIT):
            raise RuntimeError(f"redis-server did not start on {self.port}")
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30 * UNIT)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.kill(sig)
        self.start()

    def client(self) -> "redis.Redis":
        return redis.Redis(port=self.port, socket_connect_timeout=3)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)  # continued first, in case a test left it stopped


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    """A private redis-server (AOF, fsync always) that a test may kill and restart."""
    with tempfile.TemporaryDirectory(prefix="ticker-faults-") as tmp:
        server = RedisServer(free_port(), Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class Procs:
    """`python -m ticker ...` processes, each logging to a temporary file."""

    url: str
    namespace: str
    logs: list[IO[bytes]] = field(default_factory=list)
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    output: dict[int, IO[bytes]] = field(default_factory=dict)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        argv = [sys.executable, "-m", "ticker", *args]
        argv += ["--redis-url", self.url, "--namespace", self.namespace]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.logs.append(log)
        self.running.append(proc)
        self.output[proc.pid] = log
        return proc

    def run(self, *args: str, timeout: float = 60) -> tuple[int, str]:
        proc = self.start(*args)
        try:
            code = proc.wait(timeout * UNIT)
        finally:
            stop(proc)
        return code, self.text(proc)

    def text(self, proc: subprocess.Popen[bytes], tail: int = 4000) -> str:
        log = self.output[proc.pid]
        log.seek(0)
        return log.read().decode(errors="replace")[-tail:]

    def close(self) -> None:
        for proc in self.running:
            stop(proc)
        for log in self.logs:
            log.close()


@pytest.fixture
def procs(aof_redis: RedisServer) -> Iterator[Procs]:
    p = Procs(aof_redis.url, f"f{os.urandom(4).hex()}")
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def fault_rng() -> random.Random:
    """The randomness of fault timing: seeded, printed, and overridable (TICKER_FAULT_SEED)."""
    seed = int(os.environ.get("TICKER_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nfault seed: TICKER_FAULT_SEED={seed}", flush=True)
    sys.stderr.write(f"fault seed: TICKER_FAULT_SEED={seed}\n")
    return random.Random(seed)


def load_state(server: RedisServer, namespace: str) -> State | None:
    with server.client() as r:
        raw, brands = r.hmget(Keys(namespace).state, ["state", "brands"])
    return State.loads(raw, brands) if raw else None


def final_state(server: RedisServer, procs: "Procs", agg: "subprocess.Popen[bytes]") -> State:
    """Wait until the aggregator applied the whole replay, stop it cleanly, return its state."""

    def ended() -> bool:
        state = load_state(server, procs.namespace)
        return state is not None and state.ended

    wait_for(ended, 60, "the aggregator to apply the whole replay")
    agg.terminate()
    assert agg.wait(10) == 0, procs.text(agg)
    live = load_state(server, procs.namespace)
    assert live is not None
    return live


def wait_for(predicate: "object", timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while True:
        try:
            if predicate():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
