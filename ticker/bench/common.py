"""What every benchmark shares: a Redis to run on, the ticker's real processes, and samplers
of memory (Redis INFO, /proc/PID/status) taken while they run."""

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO, Any

import redis

from ticker.core.aggregate import State
from ticker.keys import Keys
from ticker.procs import terminate
from ticker.redis_io import embedded_redis

MB = 1024 * 1024


@contextlib.contextmanager
def bench_redis(url: str | None) -> Iterator[str]:
    """The given Redis, or a private redis-server the benchmark starts on a free port."""
    if url:
        yield url
    else:
        with embedded_redis() as embedded:
            yield embedded


def fresh_namespace(label: str) -> str:
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


def sync_redis(url: str) -> "redis.Redis":
    return redis.Redis.from_url(url, socket_connect_timeout=3)


def drop_namespace(url: str, ns: str) -> None:
    """Delete a benchmark's keys, so a shared Redis is left as it was."""
    r = sync_redis(url)
    try:
        keys = list(r.scan_iter(match=f"ticker:{{{ns}}}:*", count=1000))
        if keys:
            r.delete(*keys)
        r.delete(f"naive:{ns}:orders", f"naive:{ns}:totals")
    finally:
        r.close()


def read_state(url: str, ns: str) -> State | None:
    """The aggregator's committed state, as /api/state would be built from it."""
    r = sync_redis(url)
    try:
        raw, brands = r.hmget(Keys(ns).state, ["state", "brands"])
    finally:
        r.close()
    return State.loads(raw, brands) if raw else None


def ticker_args(url: str, ns: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "ticker", *args, "--redis-url", url, "--namespace", ns]


@dataclass
class Proc:
    """A child process with its output kept in a temporary file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float
    ended: float | None = None

    @classmethod
    def start(cls, name: str, argv: list[str]) -> "Proc":
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        started = time.monotonic()
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        return cls(name, popen, log, started)

    def wait(self, timeout: float | None = None) -> int:
        code = self.popen.wait(timeout)
        if self.ended is None:
            self.ended = time.monotonic()
        return code

    def output(self, tail: int = 2_000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-tail:]

    def stop(self) -> None:
        terminate(self.popen, timeout=10)
        if self.ended is None:
            self.ended = time.monotonic()
        self.log.close()


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A field of /proc/PID/status in kB (VmHWM, VmRSS), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sampler:
    """Polls Redis INFO memory and each process's VmHWM every `interval` seconds."""

    url: str
    interval: float = 0.5
    pids: dict[str, int] = field(default_factory=dict)
    hwm_kb: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    redis_used_peak: int = 0
    redis_used_last: int = 0
    redis_rss_peak: int = 0
    redis_info_peak: int = 0
    redis_pid: int | None = None
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def __enter__(self) -> "Sampler":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for name, pid in list(self.pids.items()):
            kb = proc_status_kb(pid, "VmHWM")
            if kb is not None:
                self.hwm_kb[name] = max(self.hwm_kb.get(name, 0), kb)
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                self.cpu_s[name] = cpu
        try:
            r = sync_redis(self.url)
            try:
                info: dict[str, Any] = r.info("memory")
                if self.redis_pid is None:
                    self.redis_pid = int(r.info("server")["process_id"])
            finally:
                r.close()
        except redis.RedisError:
            return
        self.samples += 1
        self.redis_used_last = int(info["used_memory"])
        self.redis_used_peak = max(self.redis_used_peak, self.redis_used_last)
        self.redis_info_peak = max(self.redis_info_peak, int(info["used_memory_peak"]))
        self.redis_rss_peak = max(self.redis_rss_peak, int(info["used_memory_rss"]))
        if self.redis_pid is not None:
            kb = proc_status_kb(self.redis_pid, "VmHWM")
            if kb is not None:
                self.hwm_kb["redis-server"] = max(self.hwm_kb.get("redis-server", 0), kb)
            cpu = proc_cpu_s(self.redis_pid)
            if cpu is not None:
                self.cpu_s["redis-server"] = cpu

    def report(self) -> dict[str, Any]:
        return {
            "redis_used_memory_peak_sampled_mb": round(self.redis_used_peak / MB, 1),
            "redis_used_memory_peak_info_mb": round(self.redis_info_peak / MB, 1),
            "redis_used_memory_rss_peak_mb": round(self.redis_rss_peak / MB, 1),
            "process_peak_rss_mb": {k: round(v / 1024, 1) for k, v in self.hwm_kb.items()},
            # CPU used by each process up to its last sample (<= 0.5 s before it exited)
            "process_cpu_s": {k: round(v, 1) for k, v in self.cpu_s.items()},
            "memory_samples": self.samples,
        }


def expected_totals(
    scale: Fraction, from_ms: int, to_ms: int, seed: int, batch: int
) -> tuple[int, int, int]:
    """(cumulative GMV fen, cumulative orders, orders in the window) at the window's end."""
    from simulator import profile
    from simulator.generator import DayPlan

    plan = DayPlan(profile.load("2018"), scale, from_ms, to_ms, seed, batch)
    return (
        plan.base_gmv + plan.total_gmv,
        plan.base_orders + plan.total_orders,
        plan.total_orders,
    )


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model}


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the measured packages had uncommitted edits."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", here, *args], capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    dirty = git("status", "--porcelain", "--", "ticker", "simulator")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": dirty.splitlines()}


def redis_version(url: str) -> str:
    r = sync_redis(url)
    try:
        return str(r.info("server")["redis_version"])
    finally:
        r.close()
