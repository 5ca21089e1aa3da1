"""Raw-frame writes of one broadcast to many sockets, from writer threads and C."""

import array
import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ticker.server.connection import Client

write_all: "Callable[[array.array[int], bytes], list[tuple[int, int]]] | None"
try:
    from ticker._fanout import write_all
except ImportError:  # built without a C compiler: the broadcasts write from Python
    write_all = None

PARALLEL_FROM = 256  # a broadcast to fewer clients is written by the event loop's thread alone
CHUNK = 512  # clients per share of a broadcast handed to a writer thread (~4 ms of sends)
# The writer threads need the GIL for a moment between shares, while the event loop's
# thread holds it choosing clients; a waiting thread gets it after this long at most
# (Python's default is 5 ms). `ticker serve` sets it: 10,000-client broadcasts took 69 ms
# instead of 78-88 (measured with CHUNK 512).
GIL_SWITCH_INTERVAL = 0.001

# A share of a broadcast: the frame and the clients whose sockets take it raw.
Share = tuple[bytes, list["Client"]]


class Fanout:
    """Writes frames to many sockets, the kernel's work spread over `threads` threads.

    A TCP send over loopback costs ~7-10 us of kernel time, most of a broadcast's cost. The
    broadcast hands its shares to the writer threads as it builds them, so they write while
    it is still choosing the clients (~2 us each, in Python); then the event loop's thread
    writes shares too, until all are written. The loop runs nothing else meanwhile, so no
    other write can reach these sockets in between. Only sockets whose transport buffer is
    empty are written raw; what the kernel does not take goes to the transport afterwards.

    A share is written by `ticker._fanout.write_all` (C, the whole loop without the GIL)
    when it is built, else by `os.write` in Python, which takes the GIL back after every
    send: the threads then queue for it, and a broadcast takes ~25% longer (measured).
    """

    def __init__(self, threads: int, native: bool = True) -> None:
        self.write_all = write_all if native else None
        self.shares: queue.SimpleQueue[Share | None] = queue.SimpleQueue()
        self.written: queue.SimpleQueue[list[tuple[Client, bytes]]] = queue.SimpleQueue()
        self.threads = threads
        self.writers: list[threading.Thread] = []  # started by `start`; none: this thread

    def start(self) -> None:
        """Start the writer threads (the event loop's thread is one writer)."""
        if not self.writers:
            self.writers = [
                threading.Thread(target=self._writer, name=f"fanout-{k}", daemon=True)
                for k in range(self.threads - 1)
            ]
            for t in self.writers:
                t.start()

    def _write(self, frame: bytes, clients: list["Client"]) -> list[tuple["Client", bytes]]:
        """Write `frame` raw to each client's socket; the parts the kernel did not take.

        A socket that fails (reset, closed) is skipped: its transport learns it from its
        own reads."""
        if self.write_all is not None:
            fds = array.array("i", [c.fd for c in clients])
            return [(clients[i], frame[n:]) for i, n in self.write_all(fds, frame) if n >= 0]
        short: list[tuple[Client, bytes]] = []
        size = len(frame)
        for c in clients:
            try:
                n = os.write(c.fd, frame)
            except BlockingIOError:
                n = 0
            except OSError:
                continue
            if n < size:
                short.append((c, frame[n:]))
        return short

    def _writer(self) -> None:
        while (share := self.shares.get()) is not None:
            short: list[tuple[Client, bytes]] = []
            try:
                short = self._write(*share)
            finally:  # always answer: the broadcast waits for every share
                self.written.put(short)

    def send(self, shares: Iterable[Share], parallel: bool = True) -> None:
        """Write every share; return once all are written.

        `shares` may be a generator: each share goes to the writer threads as soon as it is
        made. Without writers, or with `parallel` false, this thread writes them all.
        """
        if not (self.writers and parallel):
            for frame, clients in shares:
                self._finish(self._write(frame, clients))
            return
        handed = 0
        try:
            for share in shares:
                self.shares.put(share)
                handed += 1
        finally:  # even if making the shares failed: no writer may outlive this call
            while handed:  # help with what the writers have not taken, then wait for them
                try:
                    taken = self.shares.get_nowait()
                except queue.Empty:
                    self._finish(self.written.get())
                else:
                    assert taken is not None  # only close() hands out None
                    self._finish(self._write(*taken))
                handed -= 1

    @staticmethod
    def _finish(short: list[tuple["Client", bytes]]) -> None:
        for c, rest in short:
            c.transport.write(rest)

    def write(self, frame: bytes, clients: list["Client"]) -> None:
        """Write one frame to these clients' sockets."""
        shares = [(frame, clients[k : k + CHUNK]) for k in range(0, len(clients), CHUNK)]
        self.send(shares, parallel=len(clients) >= PARALLEL_FROM)

    def close(self) -> None:
        """Stop the writer threads, after the shares handed to them."""
        for _ in self.writers:
            self.shares.put(None)
        for t in self.writers:
            t.join()
        self.writers = []
