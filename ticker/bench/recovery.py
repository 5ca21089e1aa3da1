"""Recovery benchmark: kill -9 the aggregator during the midnight peak at full scale, start
it again at once, and time how long it takes to catch up.

Caught up means the new process has committed and the committed state has applied the
newest batch the replay has written (`state.last_seq` >= the seq of the run's newest stream
entry, read just before). The
figure covers the whole restart: the new process's start-up (imports), loading the
committed state, the lease, finishing the dead one's pending entries and the backlog that
built up meanwhile. The totals at the end must still be exact.
"""

import statistics
import time
import uuid
from fractions import Fraction
from typing import Any

from ticker.bench.common import (
    Proc,
    drop_namespace,
    expected_totals,
    fresh_namespace,
    read_state,
    sync_redis,
    ticker_args,
)
from ticker.bench.pipeline import BenchFailed, _wait_for_group
from ticker.core.clock import format_time_of_day
from ticker.keys import Keys


def _newest_seq(r: Any, keys: Keys, run: str) -> int | None:
    newest = r.xrevrange(keys.orders, count=1)
    if not newest or newest[0][1].get(b"run") != run.encode():
        return None
    return int(newest[0][1][b"seq"])


def run_recovery(
    url: str,
    to_ms: int = 90_000,
    speed: str = "1",
    kill_at_s: tuple[float, ...] = (10.0, 35.0, 60.0),
    batch_size: int = 4000,
    seed: int = 0,
    timeout: float = 600,
) -> dict[str, Any]:
    """Replay 00:00-`to_ms` at full scale; kill -9 and restart the aggregator at each
    `kill_at_s` (wall seconds after the replay's launch); time each catch-up."""
    ns = fresh_namespace("recovery")
    keys, run = Keys(ns), f"recovery-{uuid.uuid4().hex[:8]}"
    to = format_time_of_day(to_ms, millis=False)
    replay_cmd = ["replay", "--speed", speed, "--to", to, "--run", run, "--quiet"]
    replay_cmd += ["--batch-size", str(batch_size), "--seed", str(seed)]
    agg_cmd = ticker_args(url, ns, "aggregate", "--name", "bench-recovery")
    agg = Proc.start("aggregator", agg_cmd)
    replay: Proc | None = None
    r = sync_redis(url)
    rows: list[dict[str, Any]] = []
    try:
        _wait_for_group(url, ns, agg)
        replay = Proc.start("replay", ticker_args(url, ns, *replay_cmd))
        for at in kill_at_s:
            time.sleep(max(0.0, replay.started + at - time.monotonic()))
            if replay.popen.poll() is not None:
                break  # the window ended before this kill
            state = read_state(url, ns)
            applied = state.last_seq if state else -1
            agg.popen.kill()
            agg.popen.wait()
            agg.stop()
            newest_at_kill = _newest_seq(r, keys, run) or 0
            agg = Proc.start("aggregator", agg_cmd)
            restarted = agg.started
            first_commit = caught_up = None
            # A commit the dead process had already sent may still land just after the kill;
            # the new process needs far longer than this to start, so its commits come later.
            time.sleep(0.05)
            commit0 = int(r.hget(keys.state, "commit") or 0)
            while caught_up is None:
                if agg.popen.poll() is not None:
                    raise BenchFailed(f"restarted aggregator exited:\n{agg.output()}")
                newest = _newest_seq(r, keys, run)
                commit = int(r.hget(keys.state, "commit") or 0)
                now = time.monotonic()
                if first_commit is None and commit > commit0:
                    first_commit = now
                state = read_state(url, ns)
                if first_commit and newest is not None and state and state.last_seq >= newest:
                    caught_up = now
                elif now - restarted > timeout:
                    raise BenchFailed("the restarted aggregator never caught up")
                else:
                    time.sleep(0.005)
            rows.append(
                {
                    "kill_at_s": at,
                    "sim_time_at_kill": format_time_of_day(state.sim_time_ms) if state else None,
                    "batches_behind_at_kill": newest_at_kill - applied,
                    "first_commit_s": round((first_commit or caught_up) - restarted, 3),
                    "recovery_s": round(caught_up - restarted, 3),
                }
            )
        if replay.wait(timeout) != 0:
            raise BenchFailed(f"replay failed:\n{replay.output()}")
        deadline = time.monotonic() + timeout
        while True:
            state = read_state(url, ns)
            if state is not None and state.ended:
                break
            if time.monotonic() > deadline or agg.popen.poll() is not None:
                raise BenchFailed(f"the aggregator did not finish:\n{agg.output()}")
            time.sleep(0.05)
    finally:
        r.close()
        agg.stop()
        if replay:
            replay.stop()
        drop_namespace(url, ns)
    gmv_expected, orders_expected, window_orders = expected_totals(
        Fraction(1), 0, to_ms, seed, batch_size
    )
    times = [row["recovery_s"] for row in rows]
    return {
        "command": f"ticker aggregate & ticker {' '.join(replay_cmd)}; kill -9 the aggregator "
        f"at {', '.join(f'{s:g}' for s in kill_at_s)} s and restart it at once",
        "window": f"00:00:00-{to}",
        "orders": window_orders,
        "kills": rows,
        "recovery_s": ", ".join(f"{t:.3f}" for t in times),
        "recovery_s_median": round(statistics.median(times), 3) if times else None,
        "recovery_s_max": max(times) if times else None,
        "gmv_fen": state.gmv_fen,
        "orders_total": state.orders,
        "duplicates": state.duplicates,
        "exact": state.gmv_fen == gmv_expected and state.orders == orders_expected,
    }
