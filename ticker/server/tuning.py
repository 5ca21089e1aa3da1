"""The server's timings and bounds: per connection (`Tuning`, from the environment) and for
the garbage collector."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    """Per-connection timings and bounds; docs/protocol.md states the defaults.

    `ticker serve` takes them from the environment (`from_env`): TICKER_HEARTBEAT,
    TICKER_SEND_TIMEOUT (seconds), TICKER_SEND_BUFFER and TICKER_SOCKET_BUFFER (bytes),
    TICKER_SEND_THREADS and
    TICKER_NATIVE_WRITES (0: write broadcasts from Python even where the C module is
    built). The tests shrink them to see a dead connection closed, or a stuck one dropped,
    in a second or two.
    """

    heartbeat: float = 10.0  # ping after this long without a word; no pong in half -> dropped
    send_timeout: float = 10.0  # a send blocked this long means the client stopped reading
    send_buffer: int = 64 * 1024  # bytes queued in a client's transport: no direct writes above
    # The kernel's send buffer per client socket (SO_SNDBUF; Linux doubles it): bounded, so
    # a client that stops reading is noticed (and dropped after send_timeout) while it
    # holds ~2x this, not the megabytes the kernel's autotuning would give it.
    socket_buffer: int = 64 * 1024
    send_threads: int = 2  # threads writing a broadcast's frames (the kernel's work in parallel)
    native_writes: bool = True  # with ticker._fanout where it is built

    def __post_init__(self) -> None:
        if not (
            self.heartbeat > 0
            and self.send_timeout > 0
            and self.send_buffer > 0
            and self.socket_buffer > 0
        ):
            raise ValueError(f"heartbeat, send timeout and send buffer must be above 0: {self}")
        if not 1 <= self.send_threads <= 64:
            raise ValueError(f"send threads must be 1 to 64: {self}")

    @classmethod
    def from_env(cls) -> "Tuning":
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None

        d = cls()
        return cls(
            heartbeat=number("TICKER_HEARTBEAT", d.heartbeat),
            send_timeout=number("TICKER_SEND_TIMEOUT", d.send_timeout),
            send_buffer=int(number("TICKER_SEND_BUFFER", d.send_buffer)),
            socket_buffer=int(number("TICKER_SOCKET_BUFFER", d.socket_buffer)),
            send_threads=int(number("TICKER_SEND_THREADS", d.send_threads)),
            native_writes=bool(number("TICKER_NATIVE_WRITES", d.native_writes)),
        )


# The cyclic GC: a full collection walks every tracked object, ~1.5M at 10,000 clients, and
# stopped the server for 50-380 ms (measured) although it found nothing. So survivors are
# frozen each second (automatic collections then scan only young objects), and a full
# collection runs rarely: dead clients' cycles wait for it (~20 KB each).
GC_FREEZE_EVERY = 1.0  # seconds
GC_FULL_EVERY = 600.0  # seconds between full collections...
GC_FULL_AFTER = 2_000  # ...or sooner, after this many disconnects
