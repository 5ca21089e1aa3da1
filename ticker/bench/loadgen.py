"""A load generator for any websocket server: N bare clients in a few processes, counting
the messages they get and timing each one from a timestamp it carries.

`LoadGen` (in the benchmark's process) starts `--procs` processes of this module, shares the
clients between them and drives them as one: `connect`, then `go` / `stop` windows, each
answered with what the clients got (counts, latency histograms, errors).

A message's timestamp is the integer of epoch milliseconds after a marker in its text
(`Options.stamp`, by default `"position":"`: the ticker's feed positions are Redis entry ids,
`<ms>-<seq>`, and the benchmark's other servers get the same message with the moment it
was published there). A client counts as connected after the upgrade and `greeting`
messages (the ticker's hello and snapshot: 2); it may send one text message after the
upgrade (`send`: a subscription).

    python -m ticker.bench.loadgen ws://127.0.0.1:8000/ws 1000 --greeting 2
"""

import argparse
import base64
import contextlib
import gc
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from ticker.bench.procstats import raise_nofile

# Each client is a plain non-blocking socket speaking just enough RFC 6455 for a feed client
# (the upgrade handshake, unmasked server frames with 7/16/64-bit lengths, masked pongs and
# close, permessage-deflate when offered and accepted), and one epoll loop serves them all.
# A client library costs ~30 us of CPU per message (aiohttp: a task wake-up and a message
# object each) and even asyncio's protocol callbacks ~14 us; at 50,000 messages/s that would
# take most of this machine's two cores, and the benchmark would measure its own clients.


PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1
STAMP = '"position":"'  # the ticker's: a feed position, `<epoch ms>-<seq>`
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python names it from 3.14
TIMESTAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
MAX_LATENCY_MS = 120_000  # histogram cap


@dataclass(frozen=True)
class Options:
    """What the clients say and expect; the same in every load-generator process."""

    greeting: int = 2  # messages before a client counts as connected (ticker: hello, snapshot)
    send: str = ""  # a text message each client sends after the upgrade (e.g. a subscription)
    stamp: str = STAMP  # the text before each message's epoch-ms timestamp
    kinds: tuple[str, ...] = ("tick", "milestone")  # message types expected; () any
    deflate: bool = False  # offer permessage-deflate

    def argv(self) -> list[str]:
        return [
            "--greeting",
            str(self.greeting),
            "--send",
            self.send,
            "--stamp",
            self.stamp,
            "--kinds",
            ",".join(self.kinds),
        ] + (["--deflate"] if self.deflate else [])


class LoadStats:
    """What one load-generator process saw; `hist[ms]` counts latencies in whole ms.

    Two latencies per message, both from the feed entry's id: to its arrival in the client's
    socket (`hist`: the kernel's receive timestamp, SO_TIMESTAMPNS, of the last segment that
    completed the read), and to the moment this process read it (`read_hist`). One process
    reads thousands of sockets in turn, so after a broadcast the last of them wait for it,
    tens of milliseconds at 5,000 clients, where a real client on its own machine reads its
    one socket at once: the arrival is the server's delivery, the read adds this queue.
    """

    def __init__(self) -> None:
        self.counting = False
        self.received = 0
        self.received_bytes = 0
        self.arrival_unknown = 0  # messages read together with a later one (see `text`)
        self.hist = [0] * (MAX_LATENCY_MS + 1)
        self.read_hist = [0] * (MAX_LATENCY_MS + 1)
        self.errors: dict[str, int] = {}
        self.closed = 0
        self.greeted = 0  # clients that got their greeting
        self.lost = 0  # clients closed before that

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def reset(self) -> None:
        self.received = self.received_bytes = self.arrival_unknown = 0
        self.hist = [0] * (MAX_LATENCY_MS + 1)
        self.read_hist = [0] * (MAX_LATENCY_MS + 1)


class FeedConn:
    """One websocket client that times each text message from its timestamp on receipt."""

    def __init__(self, sock: socket.socket, stats: LoadStats, options: Options) -> None:
        self.sock, self.stats, self.options = sock, stats, options
        self.stamp = options.stamp.encode()
        self.head = b""  # the handshake response, until it is complete
        self.upgraded = False
        self.buf = b""  # an incomplete frame
        self.greeting = options.greeting  # messages before the client counts as connected
        self.inflate: Any = None
        self.seen = 0
        self.open = True

    def feed(self, data: bytes, arrived_ms: float) -> None:
        """Take bytes from the socket, complete at `arrived_ms` (epoch): frames are parsed
        in place, without copies."""
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].lower(), self.head[end + 4 :]
            if not head.startswith(b"http/1.1 101"):
                self.stats.error(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                self.close()
                return
            if b"permessage-deflate" in head:
                self.inflate = zlib.decompressobj(-15)
            self.upgraded, self.head = True, b""
            if self.options.send:
                self.send(masked(TEXT, self.options.send.encode()))
            if not self.greeting:
                self.stats.greeted += 1
        if self.buf:
            data, self.buf = self.buf + data, b""
        i, n = 0, len(data)
        while n - i >= 2:
            b0, length, h = data[i], data[i + 1], 2
            if length & 0x80 or b0 & (0x30 if self.inflate else 0x70) or not b0 & 0x80:
                self.stats.error("bad frame header (mask, reserved bits or fragment)")
                self.close()
                return
            if length == 126:
                if n - i < 4:
                    break
                length, h = int.from_bytes(data[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if n - i < 10:
                    break
                length, h = int.from_bytes(data[i + 2 : i + 10], "big"), 10
            end = i + h + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode == TEXT:
                if b0 & 0x40:  # compressed (permessage-deflate)
                    text = self.inflate.decompress(data[i + h : end] + b"\x00\x00\xff\xff")
                    self.text(text, 0, len(text), arrived_ms if end == n else None)
                elif self.greeting or self.stats.counting:
                    self.text(data, i + h, end, arrived_ms if end == n else None)
            elif opcode == PING:  # answer with the same payload; a zero mask is a valid mask
                self.send(masked(PONG, data[i + h : end]))
            elif opcode == CLOSE:
                self.close()
                return
            i = end
        if i < n:
            self.buf = data[i:]

    def text(self, data: bytes, start: int, end: int, arrived_ms: float | None) -> None:
        """One text message; `arrived_ms` is None when its arrival is not known: the read
        that took it went on past it, and the timestamp is that of the read's last segment
        (the kernel merges unread segments, so a later message's time)."""
        if self.greeting:
            self.greeting -= 1
            self.stats.greeted += not self.greeting
            return
        stats = self.stats
        if not stats.counting:
            return
        self.seen += 1
        kinds = self.options.kinds
        if kinds and self.seen % 50 == 1:  # check a sample whole: each frame one JSON message
            try:
                kind = orjson.loads(data[start:end]).get("type")
            except (orjson.JSONDecodeError, AttributeError):
                kind = None
            if kind not in kinds:
                stats.error(f"unexpected message {data[start : start + 60]!r}")
        stamp = self.stamp
        p = data.find(stamp, start, end) + len(stamp)
        q = p
        while q < end and 48 <= data[q] <= 57:  # the timestamp's digits
            q += 1
        if p < len(stamp) or q == p:
            stats.error("message without a timestamp")
            return
        ms = int(data[p:q])
        if arrived_ms is None:
            stats.arrival_unknown += 1
        else:
            stats.hist[min(MAX_LATENCY_MS, max(0, int(arrived_ms - ms)))] += 1
        stats.read_hist[min(MAX_LATENCY_MS, max(0, int(time.time() * 1000 - ms)))] += 1
        stats.received += 1
        stats.received_bytes += end - start

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a full or broken socket: the server will see
            self.sock.send(data)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.send(masked(CLOSE, b""))
            self.stats.closed += 1
            self.stats.lost += not self.upgraded or self.greeting > 0


def masked(opcode: int, payload: bytes) -> bytes:
    """A client's frame: FIN, `opcode`, masked with a zero key (a valid mask: the payload
    goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65_536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def arrival_ms(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive timestamp of a read (epoch ms), or now when it gave none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return int(seconds) * 1000 + int(nanoseconds) / 1e6
    return time.time() * 1000


def run(
    url: str, clients: int, options: Options, connect_concurrency: int = 100, nap: float = 0.0
) -> None:
    """Connect `clients` websockets, then obey `go` / `stop` / `quit` lines on stdin.

    Between two reads of the ready sockets the loop sleeps `nap` seconds: the messages that
    arrive meanwhile are read in one batch instead of each waking the process (a wake-up
    costs the server's sending side too, which would be billed to the server; a real client
    is on another machine). A message's receipt is stamped when it is read, so the nap is
    part of the latency measured (at most `nap` more)."""
    raise_nofile()
    stats = LoadStats()
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if options.deflate else ""
    ep = select.epoll()
    conns: dict[int, FeedConn] = {}
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    ep.register(stdin, select.EPOLLIN)
    lines = b""

    def connect() -> None:
        sock = socket.socket()
        try:
            sock.connect((host, port))
        except OSError as exc:
            stats.error(type(exc).__name__)
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.send(
            (
                f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extension}\r\n"
            ).encode()
        )
        conns[sock.fileno()] = FeedConn(sock, stats, options)
        ep.register(sock.fileno(), select.EPOLLIN)

    def pump(timeout: float) -> list[str]:
        """Read what the sockets have; the complete lines from stdin."""
        nonlocal lines
        commands: list[str] = []
        for fd, _ in ep.poll(timeout):
            if fd == stdin:
                chunk = os.read(stdin, 4096)
                lines += chunk if chunk else b"quit\n"
                *done, lines = lines.split(b"\n")
                commands += [d.decode().strip() for d in done]
                continue
            conn = conns[fd]
            try:
                data, ancillary, _, _ = conn.sock.recvmsg(262_144, TIMESTAMP_SPACE)
            except OSError:
                data = b""
            if data:
                conn.feed(data, arrival_ms(ancillary))
            if not data or not conn.open:
                ep.unregister(fd)
                if conn.open:
                    conn.open = False
                    stats.closed += 1
                    stats.lost += not conn.upgraded or conn.greeting > 0
        return commands

    started = time.monotonic()
    deadline = started + 120 + clients / 50
    opened = 0
    while time.monotonic() < deadline:
        while opened < clients and opened - stats.greeted - stats.lost < connect_concurrency:
            connect()
            opened += 1
        if opened == clients and opened == stats.greeted + stats.lost:
            break
        pump(0.05)
    ok = sum(c.upgraded and c.greeting == 0 and c.open for c in conns.values())
    gc.disable()  # measuring allocates no cycles; a full pass over the clients would stall it
    _say(
        {
            "event": "connected",
            "ok": ok,
            "failed": clients - ok,
            "deflated": sum(c.inflate is not None for c in conns.values()),
            "seconds": round(time.monotonic() - started, 2),
            "errors": stats.errors,
        }
    )
    closed0 = cpu0 = t0 = 0.0
    running = True
    while running:
        if nap:
            time.sleep(nap)
        for line in pump(1.0):
            if line == "go":
                stats.reset()
                closed0 = stats.closed
                stats.counting, cpu0, t0 = True, time.process_time(), time.monotonic()
                _say({"event": "going"})
            elif line == "stop":
                stats.counting = False
                elapsed = time.monotonic() - t0
                _say(
                    {
                        "event": "stopped",
                        "received": stats.received,
                        "received_payload_bytes": stats.received_bytes,
                        "arrival_unknown": stats.arrival_unknown,
                        "elapsed": elapsed,
                        "loadgen_cpu_pct": round(100 * (time.process_time() - cpu0) / elapsed, 1),
                        "latency_hist": {ms: n for ms, n in enumerate(stats.hist) if n},
                        "read_hist": {ms: n for ms, n in enumerate(stats.read_hist) if n},
                        "closed_early": stats.closed - closed0,
                        "errors": stats.errors,
                    }
                )
            elif line == "quit":
                running = False
    for c in conns.values():
        c.sock.close()


def _say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def percentiles(hist: dict[int, int]) -> dict[str, float]:
    """n, p50, p90, p99, p99.9 and max of a histogram {value: count}."""
    n = sum(hist.values())
    if not n:
        return {"n": 0, "p50": 0, "p90": 0, "p99": 0, "p99.9": 0, "max": 0}
    out: dict[str, float] = {"n": n}
    marks = [("p50", n // 2), ("p90", int(n * 0.9)), ("p99", min(n - 1, int(n * 0.99)))]
    marks.append(("p99.9", min(n - 1, int(n * 0.999))))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        while marks and seen > marks[0][1]:
            out[marks.pop(0)[0]] = value
    out["max"] = max(hist)
    return out


@dataclass(frozen=True)
class LoadSpec:
    """How the load generators run (see `main`'s options)."""

    procs: int = 4  # processes sharing the clients
    nap: float = 0.005  # seconds between two reads of the ready sockets
    nice: int = 19  # their scheduling niceness: the server is served first


class LoadGen:
    """Load-generator processes sharing `clients` between them, driven as one."""

    def __init__(self, url: str, clients: int, options: Options, spec: LoadSpec) -> None:
        procs = max(1, min(spec.procs, clients))
        self.procs = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "ticker.bench.loadgen", url, str(share)),
                    *("--nap", str(spec.nap), "--nice", str(spec.nice)),
                    *options.argv(),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in (clients // procs + (k < clients % procs) for k in range(procs))
        ]

    def _read_one(self, proc: "subprocess.Popen[str]", timeout: float) -> dict[str, Any]:
        result: list[str] = []
        assert proc.stdout is not None
        t = threading.Thread(target=lambda: result.append(proc.stdout.readline()))  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(f"load generator gave no answer (exit {proc.poll()})")
        return dict(json.loads(result[0]))

    def read(self, timeout: float = 300) -> dict[str, Any]:
        """The next answer of every process, merged (counts summed, histograms merged)."""
        answers = [self._read_one(p, timeout) for p in self.procs]
        merged: dict[str, Any] = {"event": answers[0]["event"], "processes": len(answers)}
        errors: dict[str, int] = {}
        hist: dict[int, int] = {}
        read_hist: dict[int, int] = {}
        for a in answers:
            for k, v in a.get("errors", {}).items():
                errors[k] = errors.get(k, 0) + v
            for ms, count in a.get("latency_hist", {}).items():
                hist[int(ms)] = hist.get(int(ms), 0) + count
            for ms, count in a.get("read_hist", {}).items():
                read_hist[int(ms)] = read_hist.get(int(ms), 0) + count
            for k in (
                "ok",
                "failed",
                "deflated",
                "received",
                "received_payload_bytes",
                "arrival_unknown",
                "closed_early",
            ):
                if k in a:
                    merged[k] = merged.get(k, 0) + a[k]
            for k in ("seconds", "elapsed"):
                if k in a:
                    merged[k] = max(merged.get(k, 0), a[k])
        if "loadgen_cpu_pct" in answers[0]:  # of one core; above 100 with several processes
            merged["loadgen_cpu_pct"] = round(sum(a["loadgen_cpu_pct"] for a in answers), 1)
            merged["loadgen_cpu_pct_each"] = [a["loadgen_cpu_pct"] for a in answers]
        merged["latency_ms"] = percentiles(hist)
        merged["read_latency_ms"] = percentiles(read_hist)
        merged["errors"] = errors
        return merged

    def tell(self, line: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(line + "\n")
            p.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tell("quit")
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()


def main(argv: list[str] | None = None) -> int:
    """One load-generator process: connect, then obey `go` / `stop` / `quit` on stdin."""
    d = Options()
    p = argparse.ArgumentParser(prog="python -m ticker.bench.loadgen", description=__doc__)
    p.add_argument("url", help="the websocket URL, ws://host:port/path")
    p.add_argument("clients", type=int)
    p.add_argument("--greeting", type=int, default=d.greeting, help="messages before counting")
    p.add_argument("--send", default=d.send, help="a text message to send after the upgrade")
    p.add_argument("--stamp", default=d.stamp, help="the text before each epoch-ms timestamp")
    p.add_argument("--kinds", default=",".join(d.kinds), help="message types expected ('' any)")
    p.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    p.add_argument("--nap", type=float, default=LoadSpec.nap, help="seconds between reads")
    p.add_argument("--nice", type=int, default=LoadSpec.nice, help="this process's niceness")
    args = p.parse_args(argv)
    os.nice(args.nice)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    options = Options(args.greeting, args.send, args.stamp, kinds, args.deflate)
    run(args.url, args.clients, options, nap=args.nap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
