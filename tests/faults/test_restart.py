"""A Redis without persistence restarted empty mid-replay: the aggregator restores its state
from memory under a new epoch, and the day still ends exact, each milestone fired once."""

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from simulator import profile
from simulator.generator import DayPlan
from tests.conftest import UNIT
from tests.faults.conftest import Procs, RedisServer, load_state, wait_for
from ticker.keys import Keys
from ticker.redis_io import answers_soon, free_port
from ticker.verify import recompute


class VolatileRedis(RedisServer):
    """A redis-server with no persistence at all: a restart comes back empty."""

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not answers_soon(self.port, self.proc, 20 * UNIT):
            raise RuntimeError(f"redis-server did not start on {self.port}")


@pytest.fixture
def volatile() -> Iterator[VolatileRedis]:
    with tempfile.TemporaryDirectory(prefix="ticker-volatile-") as tmp:
        server = VolatileRedis(free_port(), Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def vprocs(volatile: VolatileRedis) -> Iterator[Procs]:
    p = Procs(volatile.url, "vol")
    try:
        yield p
    finally:
        p.close()


def test_an_empty_restart_gets_a_new_epoch_and_the_day_still_ends_exact(
    volatile: VolatileRedis, vprocs: Procs
) -> None:
    """Redis restarted empty mid-replay: state restored, epoch new, totals exact at the end."""
    keys, plan = (
        Keys(vprocs.namespace),
        DayPlan(profile.load("2018"), Fraction(1, 1000), 0, 900_000, 0, 4000),
    )
    agg = vprocs.start("aggregate", "--name", "agg")
    replay = vprocs.start("replay", "--scale", "0.001", "--to", "00:15", "--speed", "60", "--quiet")
    wait_for(lambda: (s := load_state(volatile, "vol")) and s.last_seq > 200, 60, "some batches")
    with volatile.client() as r:
        epoch = r.get(keys.epoch)
    volatile.restart(signal.SIGKILL)
    wait_for(lambda: load_state(volatile, "vol") is not None, 30, "the state restored")
    with volatile.client() as r:
        assert r.get(keys.epoch) not in (None, epoch)
        assert r.get(keys.curve)
    assert replay.wait(120 * UNIT) == 0, vprocs.text(replay)
    wait_for(lambda: (s := load_state(volatile, "vol")) and s.ended, 60, "the end")
    live = load_state(volatile, "vol")
    assert live is not None and (live.gmv_fen, live.orders) == (plan.total_gmv, plan.total_orders)
    fired = [(f.milestone.id, f.sim_time_ms) for f in live.fired]
    assert fired == [(f.milestone.id, f.sim_time_ms) for f in recompute(live)[0].fired]
    assert live.dead_letters == 0 and live.gaps == 0
    assert "Redis lost its data" in vprocs.text(agg, tail=100_000)
