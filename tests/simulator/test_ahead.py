"""Generation ahead in worker processes: the serial stream exactly, bounded, stopped cleanly."""

import os
import signal
import time
from fractions import Fraction
from pathlib import Path

import pytest

from simulator.ahead import Ahead, Encoded, GeneratorFailed
from simulator.generator import DayPlan
from simulator.profile import load
from tests.conftest import UNIT, Ticker, stop
from ticker.core.batch import encode_orders

PROFILE = load("2018")


def drain(ahead: Ahead) -> list[Encoded]:
    out: list[Encoded] = []
    deadline = time.monotonic() + 120 * UNIT
    while not ahead.finished:
        assert time.monotonic() < deadline, "the workers made nothing in time"
        piece = ahead.next(timeout=0.5)
        out += piece or []
    return out


def serial(plan: DayPlan, run: str, after_seq: int = 0) -> list[tuple[int, dict[bytes, bytes]]]:
    return [
        (b.seq, encode_orders(run, b.seq, b.t0, b.t1, b.columns))
        for b in plan.batches(after_seq=after_seq)
    ]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_write_exactly_the_serial_stream(workers: int) -> None:
    """Any number of workers gives byte-identical entries, in order, to the serial plan."""
    plan = DayPlan(PROFILE, Fraction(1, 100), 0, 1_800_000, seed=11)
    with Ahead(plan, "r", workers=workers) as ahead:
        made = drain(ahead)
    assert [(e.seq, e.fields) for e in made] == serial(plan, "r")


def test_workers_at_full_scale_match_and_count_every_order() -> None:
    """At full scale (one block a piece) two workers match the serial plan and its totals."""
    plan = DayPlan(PROFILE, Fraction(1), 0, 3_000, seed=4)
    with Ahead(plan, "r", workers=2) as ahead:
        made = drain(ahead)
    assert [(e.seq, e.fields) for e in made] == serial(plan, "r")
    assert sum(e.n for e in made) == plan.total_orders
    assert sum(e.gmv_fen for e in made) == plan.total_gmv


def test_resuming_mid_block_continues_after_the_seq_given() -> None:
    """Started after seq 37, the workers make exactly the serial plan's batches from 38."""
    plan = DayPlan(PROFILE, Fraction(1), 0, 4_000, seed=3)
    with Ahead(plan, "r", after_seq=37, workers=2) as ahead:
        made = drain(ahead)
    assert [(e.seq, e.fields) for e in made] == serial(plan, "r", after_seq=37)


def test_a_miniature_day_is_cut_into_few_pieces_of_work() -> None:
    """The 1/1000 day's 1,440 blocks are handed over in a few dozen pieces, all covered."""
    plan = DayPlan(PROFILE, Fraction(1, 1000), 0, 86_400_000)
    cut = plan.pieces(0)
    assert len(cut) < 60
    assert [b for piece in cut for b in piece] == list(range(plan.blocks))


def test_a_failing_worker_is_reported_not_waited_for() -> None:
    """A worker that raises makes `next` raise GeneratorFailed with its traceback."""
    plan = DayPlan(PROFILE, Fraction(1), 0, 2_000)
    plan.slot_gmv = plan.slot_gmv[:1]  # breaks generation of every block
    with Ahead(plan, "r", workers=1) as ahead, pytest.raises(GeneratorFailed, match="failed"):
        drain(ahead)


def test_closing_early_stops_workers_blocked_on_a_full_queue() -> None:
    """Closed after one piece, the workers (waiting to queue more) are gone."""
    plan = DayPlan(PROFILE, Fraction(1), 0, 20_000)
    ahead = Ahead(plan, "r", workers=2)
    procs = list(ahead.procs)
    while ahead.next(timeout=0.5) is None:
        pass
    ahead.close()
    assert all(p.exitcode is not None for p in procs)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_the_generator_worker_dies_with_the_replay(ticker: Ticker, sig: int) -> None:
    """Whether the replay is interrupted, terminated or killed, its worker exits too."""
    replay = ticker.start("replay", "--speed", "1", "--quiet")
    try:
        deadline = time.monotonic() + 30 * UNIT
        while not (workers := children(replay.pid)):
            assert time.monotonic() < deadline and replay.poll() is None, ticker.output(replay)
            time.sleep(0.05)
        os.kill(replay.pid, sig)
        replay.wait(30 * UNIT)
        deadline = time.monotonic() + 30 * UNIT
        while not all(gone(w) for w in workers):
            assert time.monotonic() < deadline, f"worker(s) {workers} still running"
            time.sleep(0.05)
    finally:
        stop(replay)
