"""Throughput benchmarks: the real pipeline as real processes, and the naive one.

The real pipeline is `ticker aggregate --burst` and `ticker replay --speed max`, two
processes on the same Redis, timed from the replay's launch to the aggregator's exit (so
the replay's start-up and the aggregator's last commit are inside the figure). The naive
pipeline (`ticker.bench.naive`) is the tutorial design: one XADD per order, a consumer
doing XREADGROUP and one HINCRBY plus one XACK per order.
"""

import json
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from typing import Any

import orjson

from ticker.bench.common import (
    Proc,
    Sampler,
    drop_namespace,
    expected_totals,
    fresh_namespace,
    read_state,
    sync_redis,
    ticker_args,
)
from ticker.core.clock import format_time_of_day
from ticker.keys import GROUP, Keys


class BenchFailed(RuntimeError):
    """A benchmark's process failed; the message carries its output."""


def _wait_for_group(url: str, ns: str, agg: Proc, timeout: float = 30) -> None:
    r = sync_redis(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if agg.popen.poll() is not None:
                raise BenchFailed(f"aggregator exited early:\n{agg.output()}")
            if r.exists(Keys(ns).orders):
                groups = r.xinfo_groups(Keys(ns).orders)
                if any(g["name"] in (GROUP, GROUP.encode()) for g in groups):
                    return
            time.sleep(0.02)
    finally:
        r.close()
    raise BenchFailed("aggregator did not create its consumer group in time")


class _Progress(Sampler):
    """The memory sampler, plus the aggregator's committed order count over time."""

    ns: str = ""
    progress: list[tuple[float, int]]

    def sample(self) -> None:
        super().sample()
        try:
            r = sync_redis(self.url)
            try:
                raw = r.hget(Keys(self.ns).state, "state")
            finally:
                r.close()
        except Exception:
            return
        if raw:
            self.progress.append((time.monotonic(), int(orjson.loads(raw)["orders"])))


def run_real(
    url: str,
    scale: Fraction,
    from_ms: int,
    to_ms: int,
    batch_size: int = 4000,
    seed: int = 0,
    timeout: float = 3600,
    label: str = "pipeline",
    max_wall: float | None = None,
) -> dict[str, Any]:
    """Replay a window at max speed through the real aggregator; check the totals.

    With `max_wall`, a replay still running after that many seconds is stopped; what the
    aggregator applied by then is measured and checked (a partial window, so labelled)."""
    gmv_expected, orders_expected, window_orders = expected_totals(
        scale, from_ms, to_ms, seed, batch_size
    )
    ns = fresh_namespace(label)
    frm = format_time_of_day(from_ms, millis=False)
    to = format_time_of_day(to_ms, millis=False)
    scale_text = str(scale.numerator) if scale.denominator == 1 else str(float(scale))
    replay_cmd = [
        "replay",
        "--speed",
        "max",
        "--scale",
        scale_text,
        "--from",
        frm,
        "--to",
        to,
        "--batch-size",
        str(batch_size),
        "--seed",
        str(seed),
        "--quiet",
    ]
    agg = Proc.start("aggregator", ticker_args(url, ns, "aggregate", "--burst", "--name", "bench"))
    replay: Proc | None = None
    sampler = _Progress(url)
    sampler.ns, sampler.progress = ns, []
    sampler.watch("aggregator", agg.popen.pid)
    try:
        _wait_for_group(url, ns, agg)
        with sampler:
            replay = Proc.start("replay", ticker_args(url, ns, *replay_cmd))
            sampler.watch("replay", replay.popen.pid)
            try:
                code = replay.wait(max_wall or timeout)
            except subprocess.TimeoutExpired:
                code = None
            if code is None:  # partial: stop writing, let the aggregator apply the backlog
                replay.stop()
                agg_done = _settle(url, ns)
            else:
                if code != 0:
                    raise BenchFailed(f"replay failed:\n{replay.output()}")
                if agg.wait(timeout) != 0:
                    raise BenchFailed(f"aggregator failed:\n{agg.output()}")
                assert agg.ended is not None
                agg_done = agg.ended
        assert replay.ended is not None
        wall = agg_done - replay.started
        state = read_state(url, ns)
    finally:
        agg.stop()
        if replay:
            replay.stop()
        drop_namespace(url, ns)
    gmv = state.gmv_fen if state else None
    orders = state.orders if state else None
    exact: bool | None = (
        gmv == gmv_expected and orders == orders_expected and bool(state and state.ended)
    )
    partial: dict[str, Any] | None = None
    if code is None:
        partial = _partial_check(state, scale, from_ms, to_ms, seed, batch_size)
        exact = partial["exact"]
        window_orders = partial["orders_applied"]
    return {
        "partial": partial,
        "command": (
            f"ticker aggregate --burst & ticker {' '.join(replay_cmd)}"
            + (f"  [scale {scale_text}]" if scale != 1 else "")
        ),
        "window": f"{frm}-{to}",
        "scale": scale_text,
        "batch_size": batch_size,
        "orders": window_orders,
        "wall_s": round(wall, 3),
        "replay_wall_s": round(replay.ended - replay.started, 3),
        "orders_per_s": round(window_orders / wall),
        "sustained_orders_per_s": _sustained(sampler.progress),
        "gmv_fen": gmv,
        "gmv_fen_expected": gmv_expected,
        "orders_total": orders,
        "orders_total_expected": orders_expected,
        "duplicates": state.duplicates if state else None,
        "dead_letters": state.dead_letters if state else None,
        "exact": exact,
        **sampler.report(),
    }


def run_generator(
    scale: Fraction, from_ms: int, to_ms: int, batch_size: int = 4000, seed: int = 0
) -> dict[str, Any]:
    """The generator alone on one core: the window's entries made and encoded in this
    process (what a replay's worker does), in orders per CPU-second."""
    from simulator import profile
    from simulator.ahead import encode_blocks
    from simulator.generator import DayPlan

    plan = DayPlan(profile.load("2018"), scale, from_ms, to_ms, seed, batch_size)
    cpu, wall = time.process_time(), time.monotonic()
    orders = sum(e.n for e in encode_blocks(plan, range(plan.blocks), "bench", 0))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return {
        "command": "DayPlan(...) blocks made and encoded in one process (simulator.ahead)",
        "orders": orders,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "orders_per_cpu_s": round(orders / max(cpu, 1e-9)),
    }


def _settle(url: str, ns: str, quiet: float = 1.5, limit: float = 60) -> float:
    """Wait until the committed order count stops moving; the time it last moved."""
    r = sync_redis(url)
    last, moved = None, time.monotonic()
    deadline = moved + limit
    try:
        while time.monotonic() < deadline:
            raw = r.hget(Keys(ns).state, "state")
            n = int(orjson.loads(raw)["orders"]) if raw else None
            if n != last:
                last, moved = n, time.monotonic()
            elif time.monotonic() - moved > quiet:
                break
            time.sleep(0.05)
    finally:
        r.close()
    return moved


def _partial_check(
    state: Any, scale: Fraction, from_ms: int, to_ms: int, seed: int, batch_size: int
) -> dict[str, Any]:
    """Check a stopped run's totals against the plan, up to the last batch it applied:
    orders exactly always; GMV exactly when that batch closes its slot (the plan fixes
    each slot's GMV, not each batch's)."""
    from simulator import profile
    from simulator.generator import DayPlan

    plan = DayPlan(profile.load("2018"), scale, from_ms, to_ms, seed, batch_size)
    seq = state.last_seq if state else 0
    if seq < 1:
        return {"exact": None, "orders_applied": 0, "last_seq": seq}
    orders, gmv = plan.upto(seq)
    exact = state.orders == orders and (gmv is None or state.gmv_fen == gmv)
    return {
        "exact": exact,
        "orders_applied": state.orders - plan.base_orders,
        "orders_expected_at_last_seq": orders,
        "gmv_fen_checked": gmv is not None,
        "gmv_fen_expected_at_last_seq": gmv,
        "last_seq": seq,
        "sim_time_reached": state.view()["sim_time"],
        "note": "stopped at --max-wall; figures cover the window up to sim_time_reached",
    }


def _sustained(progress: list[tuple[float, int]]) -> int | None:
    """Orders/s between the first and the last sample that saw the count move."""
    moving = [(t, n) for i, (t, n) in enumerate(progress) if i == 0 or n != progress[i - 1][1]]
    if len(moving) < 3:
        return None
    (t0, n0), (t1, n1) = moving[1], moving[-1]
    return round((n1 - n0) / (t1 - t0)) if t1 > t0 else None


def run_naive(url: str, seconds: float, pipeline: int = 1) -> dict[str, Any]:
    """The tutorial design for `seconds`, on the same Redis: producer and consumer processes."""
    ns = fresh_namespace("naive")
    base = [sys.executable, "-m", "ticker.bench.naive", "--redis-url", url, "--namespace", ns]
    base += ["--pipeline", str(pipeline)]
    consumer = Proc.start("naive-consumer", [*base, "consume"])
    producer: Proc | None = None
    try:
        time.sleep(0.3)  # the consumer creates its group (the producer would too, if first)
        producer = Proc.start("naive-producer", [*base, "produce", "--seconds", str(seconds)])
        if producer.wait(seconds * 10 + 60) != 0:
            raise BenchFailed(f"naive producer failed:\n{producer.output()}")
        if consumer.wait(seconds * 100 + 60) != 0:
            raise BenchFailed(f"naive consumer failed:\n{consumer.output()}")
        assert producer.ended is not None and consumer.ended is not None
        made = _last_json(producer.output())
        done = _last_json(consumer.output())
        wall = done["end_wall"] - made["start_wall"]  # first XADD to last order applied
    finally:
        consumer.stop()
        if producer:
            producer.stop()
        drop_namespace(url, ns)
    return {
        "command": f"python -m ticker.bench.naive produce|consume --pipeline {pipeline}",
        "design": "one XADD per order (6 fields); consumer XREADGROUP COUNT 100, then one "
        f"HINCRBY and one XACK per order; {pipeline} command(s) per round trip",
        "orders": done["orders"],
        "wall_s": round(wall, 3),
        "orders_per_s": round(done["orders"] / wall),
        "producer_orders_per_s": round(made["orders"] / made["seconds"]),
        "exact": done["orders"] == made["orders"] and done["gmv_fen"] == made["gmv_fen"],
    }


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise BenchFailed(f"no result line in:\n{text}")


def wait_http(url: str, proc: Proc, timeout: float = 30) -> None:
    """Wait until `url` answers; BenchFailed if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise BenchFailed(f"server exited:\n{proc.output()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchFailed("server did not answer /healthz in time")
