"""Exactly once through any crash: kill -9 of the aggregator and of the simulator at
random moments, a takeover under a new consumer name, a Redis restart, a Redis freeze and
every client connection killed, all during one replay of real processes. The committed
totals, every per-dimension tally and the milestones must equal a clean fold.

The fault timing is seeded; the seed is printed (run with `-s`, or see the failure's
captured output) and TICKER_FAULT_SEED=<seed> replays the same schedule.
"""

import random
import signal
import subprocess
import time
from fractions import Fraction

import numpy as np

from simulator import profile
from simulator.generator import DayPlan
from tests.faults.conftest import UNIT, Procs, RedisServer, load_state, wait_for
from ticker.keys import GROUP, Keys
from ticker.procs import terminate
from ticker.verify import DIMENSIONS, recompute

SCALE, HOURS, SPEED, RUN = "0.001", 2, "300", "faults-2018-fixed"
TO = f"{HOURS:02d}:00"
KILLS = 24  # kill -9s, half of the aggregator, half of the simulator


class Pipeline:
    """The aggregator and the replay, restarted at once whenever the test kills them."""

    def __init__(self, procs: Procs, server: RedisServer) -> None:
        self.procs, self.server = procs, server
        self.agg_name = "agg-1"
        self.agg = self.start_aggregator()
        self.replay = self.start_replay()
        self.replay_done = False
        self.kills = {"aggregator": 0, "replay": 0}
        self.unexpected: list[str] = []  # exits the test did not cause, with their output
        self.aggregators: list[tuple[str, subprocess.Popen[bytes]]] = [(self.agg_name, self.agg)]

    def start_aggregator(self) -> subprocess.Popen[bytes]:
        proc = self.procs.start("aggregate", "--name", self.agg_name)
        if hasattr(self, "aggregators"):
            self.aggregators.append((self.agg_name, proc))
        return proc

    def start_replay(self) -> subprocess.Popen[bytes]:
        args = ["--scale", SCALE, "--to", TO, "--speed", SPEED, "--run", RUN, "--quiet"]
        return self.procs.start("replay", *args)

    def supervise(self) -> None:
        """Restart whatever exited on its own (as a process supervisor would)."""
        if self.agg.poll() is not None:
            self.unexpected.append(f"aggregator exit {self.agg.returncode}:\n{self.text(self.agg)}")
            self.agg = self.start_aggregator()
        if not self.replay_done and self.replay.poll() is not None:
            if self.replay.returncode == 0:
                self.replay_done = True
            else:
                self.unexpected.append(
                    f"replay exit {self.replay.returncode}:\n{self.text(self.replay)}"
                )
                self.replay = self.start_replay()

    def text(self, proc: subprocess.Popen[bytes]) -> str:
        return self.procs.text(proc, tail=1500)

    def kill(self, what: str) -> None:
        if what == "replay" and not self.replay_done:
            self.replay.kill()
            self.replay.wait()
            self.kills["replay"] += 1
            self.replay = self.start_replay()
        else:
            self.agg.kill()
            self.agg.wait()
            self.kills["aggregator"] += 1
            self.agg = self.start_aggregator()

    def takeover(self, new_name: str) -> bool:
        """Freeze the aggregator while it has entries delivered but not committed, kill it
        and start one under a new consumer name: it must claim them (XAUTOCLAIM)."""
        keys = Keys(self.procs.namespace)
        # Until a deadline, not a count of tries: on a busy machine a just-restarted
        # aggregator or replay takes seconds to reach its first read or write.
        deadline = time.monotonic() + 60 * UNIT
        with self.server.client() as r:
            while time.monotonic() < deadline and not self.replay_done:
                self.supervise()
                self.agg.send_signal(signal.SIGSTOP)
                time.sleep(0.3)  # new batches get delivered to its blocked XREADGROUP
                pending = [
                    c for c in r.xinfo_consumers(keys.orders, GROUP)
                    if c["name"].decode() == self.agg_name and c["pending"] > 0
                ]  # fmt: skip
                if pending:
                    self.agg.kill()
                    self.agg.wait()
                    self.kills["aggregator"] += 1
                    self.agg_name = new_name
                    self.agg = self.start_aggregator()
                    return True
                self.agg.send_signal(signal.SIGCONT)
                time.sleep(0.2)
        return False


def test_exactly_once_through_random_kills_and_redis_faults(
    aof_redis: RedisServer, procs: Procs, fault_rng: random.Random
) -> None:
    """24 kill -9s, a takeover, Redis restart/freeze/client kill: totals equal a clean fold."""
    rng = fault_rng
    pipe = Pipeline(procs, aof_redis)
    keys = Keys(procs.namespace)
    targets = ["aggregator", "replay"] * (KILLS // 2)
    rng.shuffle(targets)
    events: list[str] = [f"kill:{t}" for t in targets]
    # Redis faults and the takeover go at random places in the first two thirds.
    for event in ("redis-restart", "redis-freeze", "client-kill", "takeover"):
        events.insert(rng.randrange(2, 2 * len(events) // 3), event)
    done: list[str] = []
    mid_replay: list[bool] = []  # whether each Redis fault and the takeover hit a live replay
    try:
        wait_for(lambda: load_state(aof_redis, procs.namespace) is not None, 30, "first commit")
        for event in events:
            time.sleep(rng.uniform(0.4, 1.4))
            pipe.supervise()
            if not event.startswith("kill:"):
                mid_replay.append(not pipe.replay_done and pipe.replay.poll() is None)
            if event.startswith("kill:"):
                pipe.kill(event[5:])
            elif event == "takeover":
                assert pipe.takeover("agg-2"), "never caught the aggregator with pending entries"
            elif event == "redis-restart":
                aof_redis.restart(signal.SIGKILL)
            elif event == "redis-freeze":
                aof_redis.send(signal.SIGSTOP)
                time.sleep(3)
                aof_redis.send(signal.SIGCONT)
            elif event == "client-kill":
                with aof_redis.client() as r:
                    r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            done.append(event)
        print(f"faults injected: {done}; kills {pipe.kills}")
        assert pipe.kills["aggregator"] + pipe.kills["replay"] >= 20
        assert mid_replay == [True] * 4

        def finished() -> bool:
            pipe.supervise()
            state = load_state(aof_redis, procs.namespace)
            return pipe.replay_done and state is not None and state.ended

        wait_for(finished, 120, "the replay to end and the aggregator to apply it all", 0.25)
    finally:
        terminate(pipe.agg, pipe.replay, timeout=10 * UNIT)
    # Exits the test did not cause: only a fenced-off aggregator may stop by itself (it
    # does so rather than risk counting twice), and a process (re)started while the test
    # had Redis down or frozen exits at its start-up check, saying so (on a busy machine a
    # restart of Redis takes long enough); each is restarted like after a crash.
    for text in pipe.unexpected:
        assert "another aggregator" in text or "lease" in text or "cannot reach Redis" in text, text
    print(f"unexpected exits (restarted): {len(pipe.unexpected)}")

    live = load_state(aof_redis, procs.namespace)
    assert live is not None
    plan = DayPlan(profile.load("2018"), Fraction(SCALE), 0, HOURS * 3_600_000, 0, 4000)
    clean, _ = recompute(live)
    assert live.run == RUN and live.ended and live.last_seq == plan.end_seq
    assert (live.gmv_fen, live.orders) == (
        plan.base_gmv + plan.total_gmv,
        plan.base_orders + plan.total_orders,
    )
    assert (live.gmv_fen, live.orders) == (clean.gmv_fen, clean.orders)
    for name in DIMENSIONS:
        assert np.array_equal(getattr(live, name), getattr(clean, name)), name
    assert np.array_equal(live.brand_gmv, clean.brand_gmv)
    fired = [(f.milestone.id, f.sim_time_ms) for f in live.fired]
    assert fired == [(f.milestone.id, f.sim_time_ms) for f in clean.fired]
    assert fired, "the window should cross some milestones"
    assert live.dead_letters == 0 and live.gaps == 0
    print(f"duplicates dropped: {live.duplicates}; commits: {_commits(aof_redis, keys)}")
    with aof_redis.client() as r:
        assert r.xlen(keys.feed) <= 11_000
    code, out = procs.run("verify")
    assert code == 0, out
    # The consumer started under a new name claimed the dead one's pending entries.
    logs = "".join(procs.text(p, tail=1_000_000) for n, p in pipe.aggregators if n == "agg-2")
    assert "claimed" in logs, logs[-3000:]
    print([line for line in logs.splitlines() if "claimed" in line])
    with aof_redis.client() as r:
        found = r.xinfo_consumers(keys.orders, GROUP)
    consumers = {c["name"].decode(): c["pending"] for c in found}
    assert consumers.get("agg-1", 0) == 0, consumers


def _commits(server: RedisServer, keys: Keys) -> int:
    with server.client() as r:
        return int(r.hget(keys.state, "commit") or 0)
