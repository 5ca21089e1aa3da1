"""A plan's batches generated ahead, encoded and ready to write, in worker processes.

Every block has its own random generator (`DayPlan.piece_batches`), so blocks can be made
in any order. The blocks are cut into pieces of work (`DayPlan.pieces`: one block at full
scale, many quiet ones on a miniature day); with W workers, worker i makes pieces i, i+W, ... and
the writer takes them back in order, so the stream is byte-for-byte the serial one.

A worker writes each piece's encoded columns into the next slot of a buffer it shares with
the writer (an anonymous shared mapping made before the fork) and queues only where each
batch's columns are; the writer copies them out and frees the slot. So no order is pickled
or sent through a pipe. A worker has `depth` + 1 slots, each as large as the largest piece
(a second of the full-scale peak is ~10 MB), and stays that far ahead of the writer: bounded
memory, and at 1x the next second is ready long before its first batch is due.

Workers are forked (the plan is not copied until written to), ignore SIGINT (the writer
stops them), and die with the writer: the kernel sends them SIGTERM when it exits, however
it exits (PR_SET_PDEATHSIG), and a worker that finds its parent gone stops by itself.
With `workers=0` the pieces are made in the writer's own process, when asked for.
"""

import contextlib
import ctypes
import mmap
import multiprocessing as mp
import os
import queue
import signal
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.generator import DayPlan
from ticker.core.batch import COLUMNS, encode_orders, orders_entry

DEPTH = 2  # pieces of work queued per worker
PR_SET_PDEATHSIG = 1
ROW_BYTES = sum(dtype.itemsize for dtype in COLUMNS.values())  # one order, encoded


@dataclass(frozen=True)
class Encoded:
    """One orders entry, ready for XADD, with what the progress bar counts."""

    seq: int
    t0: int
    t1: int
    n: int
    gmv_fen: int
    fields: dict[bytes, bytes]


class GeneratorFailed(RuntimeError):
    """A worker raised or died; the message says how."""


def encode_blocks(plan: DayPlan, blocks: range, run: str, after_seq: int) -> list[Encoded]:
    """The batches of consecutive blocks with a seq above `after_seq`, encoded for `run`."""
    return [
        Encoded(
            b.seq,
            b.t0,
            b.t1,
            b.n,
            int(b.columns["amt"].sum()),
            encode_orders(run, b.seq, b.t0, b.t1, b.columns),
        )
        for b in plan.piece_batches(blocks, after_seq)
    ]


def default_workers() -> int:
    """Worker processes for generation: `TICKER_GENERATORS`, else 1 on a multi-core machine
    (generation is ~4x faster than the writer needs), else 0."""
    raw = os.environ.get("TICKER_GENERATORS")
    if raw is not None:
        try:
            return max(0, int(raw))
        except ValueError:
            raise ValueError(f"TICKER_GENERATORS={raw!r}: give a whole number") from None
    return 1 if (os.cpu_count() or 1) > 1 else 0


class Ahead:
    """Encoded batches of `plan` after `after_seq`, piece by piece (`next`)."""

    def __init__(
        self,
        plan: DayPlan,
        run: str,
        after_seq: int = 0,
        workers: int = 0,
        depth: int = DEPTH,
    ) -> None:
        self.plan, self.run, self.after_seq = plan, run, after_seq
        done = after_seq >= plan.last_orders_seq
        self.first = plan.blocks if done else plan.block_of_seq(after_seq + 1)
        self.pieces = plan.pieces(self.first)
        self.piece = 0  # the next piece to hand out
        workers = min(workers, len(self.pieces))
        self.queues: list[Any] = []
        self.procs: list[Any] = []
        self.buffers: list[mmap.mmap] = []
        self.free: list[Any] = []  # per worker, a semaphore counting its free slots
        self.taken: list[int] = []  # per worker, pieces taken from it so far
        self.slots = depth + 1
        if workers > 0:
            starts = plan.cum[plan.block_first_slot[[p.start for p in self.pieces]]]
            stops = plan.cum[plan.block_first_slot[[p.stop for p in self.pieces]]]
            self.slot_bytes = max(1, int((stops - starts).max()) * ROW_BYTES)
            ctx = mp.get_context("fork")
            for i in range(workers):
                buffer = mmap.mmap(-1, self.slot_bytes * self.slots)  # shared with the fork
                free = ctx.Semaphore(self.slots)
                q = ctx.Queue()  # bounded by the semaphore: at most `slots` pieces made
                p = ctx.Process(
                    target=_work,
                    args=(
                        plan,
                        after_seq,
                        self.pieces[i::workers],
                        (buffer, self.slot_bytes, self.slots, free),
                        q,
                        os.getpid(),
                    ),
                    name=f"ticker-generate-{i}",
                    daemon=True,
                )
                p.start()
                self.buffers.append(buffer)
                self.free.append(free)
                self.taken.append(0)
                self.queues.append(q)
                self.procs.append(p)

    @property
    def finished(self) -> bool:
        """Whether every block has been handed out."""
        return self.piece >= len(self.pieces)

    def next(self, timeout: float = 0.0) -> list[Encoded] | None:
        """The next piece's entries (possibly none), or None if not ready within `timeout`
        seconds. Raises GeneratorFailed if its worker raised or died."""
        if self.finished:
            raise StopIteration("every block has been handed out")
        if not self.procs:
            self.piece += 1
            return encode_blocks(self.plan, self.pieces[self.piece - 1], self.run, self.after_seq)
        i = self.piece % len(self.procs)
        try:
            q = self.queues[i]
            piece, item = q.get(timeout=timeout) if timeout else q.get_nowait()
        except queue.Empty:
            if self.procs[i].exitcode is not None and self.queues[i].empty():
                raise GeneratorFailed(
                    f"generator worker {i} exited ({self.procs[i].exitcode}) before piece "
                    f"{self.piece}"
                ) from None
            return None
        if isinstance(item, str):
            raise GeneratorFailed(f"generator worker {i} failed:\n{item}")
        assert piece == self.pieces[self.piece], (piece, self.pieces[self.piece])
        self.piece += 1
        # Copy the piece's columns out of the worker's slot, then hand the slot back.
        view = memoryview(self.buffers[i])
        base = (self.taken[i] % self.slots) * self.slot_bytes
        self.taken[i] += 1
        try:
            return [
                Encoded(
                    seq,
                    t0,
                    t1,
                    n,
                    gmv,
                    orders_entry(
                        self.run, seq, t0, t1, n, [bytes(view[base + a : base + b]) for a, b in at]
                    ),
                )
                for seq, t0, t1, n, gmv, at in item
            ]
        finally:
            view.release()
            self.free[i].release()

    def close(self) -> None:
        """Stop the workers (they may be blocked on a full queue) and reap them."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        for q in self.queues:
            q.close()
            q.cancel_join_thread()
        for buffer in self.buffers:
            buffer.close()
        self.procs, self.queues, self.buffers = [], [], []

    def __enter__(self) -> "Ahead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Slots = tuple[mmap.mmap, int, int, Any]  # (shared buffer, bytes a slot, slots, free count)


def _work(
    plan: DayPlan, after_seq: int, work: list[range], slots: Slots, out: Any, parent: int
) -> None:
    """A worker: make its pieces of work in order, each into the next free slot of its
    shared buffer, and queue where each batch's columns are; stop when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    buffer, slot_bytes, count, free = slots
    for j, piece in enumerate(work):
        while not free.acquire(timeout=0.5):
            if os.getppid() != parent:
                return
        if os.getppid() != parent:
            return
        try:
            item: object = _write_piece(plan, after_seq, piece, buffer, (j % count) * slot_bytes)
        except Exception:
            item = traceback.format_exc()
        out.put((piece, item))
        if isinstance(item, str):
            return


def _write_piece(
    plan: DayPlan, after_seq: int, piece: range, buffer: mmap.mmap, base: int
) -> list[tuple[int, int, int, int, int, list[tuple[int, int]]]]:
    """Write a piece's batches' columns into the buffer from `base`; say where they are."""
    made = []
    offset = 0
    for b in plan.piece_batches(piece, after_seq):
        at = []
        for name, dtype in COLUMNS.items():
            size = b.n * dtype.itemsize
            target = np.frombuffer(buffer, dtype=dtype, count=b.n, offset=base + offset)
            target[:] = b.columns[name]
            at.append((offset, offset + size))
            offset += size
        made.append((b.seq, b.t0, b.t1, b.n, int(b.columns["amt"].sum()), at))
    return made
