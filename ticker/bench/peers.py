"""The servers the fan-out benchmark compares, each started privately on a free port: the
ticker (`ticker serve`), nginx with the nchan module (C), and a `websockets.broadcast`
server (Python). Each is given the same message (a real tick) at the same rate, by its own
way of publishing, and serves it to the same load generator.

- `ticker`: a feed entry written to Redis (XADD); the server turns it into the tick. The
  message's timestamp is the entry id (Redis's clock, the same machine's).
- `nchan`: an HTTP POST to its publisher location; its subscribers are websockets. Debian
  ships the module as `libnginx-mod-nchan`; without it the peer is skipped with a hint.
- `websockets`: a message on a publisher's websocket, which the server hands to
  `websockets.broadcast` (encoded once, written to every connection).

For the other two the message is the ticker's tick of the same entry, its position the
moment it was published (`<epoch ms>-0`), so every peer's latency starts at publication.
Each greets a new client with the newest message (the ticker: hello and snapshot).
"""

import argparse
import asyncio
import contextlib
import functools
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from ticker import feed
from ticker.keys import Keys
from ticker.redis_io import free_port

NCHAN_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
    "/usr/share/nginx/modules/ngx_nchan_module.so",
)
NCHAN_INSTALL = "apt-get install -y libnginx-mod-nchan"
PEERS = ("ticker", "nchan", "websockets")
# A command's prefix that runs it with the open-file limit at its hard limit.
RAISED_NOFILE = ("sh", "-c", 'ulimit -n $(ulimit -Hn); exec "$0" "$@"')


class Unavailable(RuntimeError):
    """A peer that cannot run on this machine; the text says how to get it."""


class Peer(Protocol):
    """A websocket server under test: where its clients connect, how to publish to it."""

    name: str
    port: int
    pid: int  # the root of its process tree
    ws_url: str
    greeting: int  # messages a new client gets before the published ones

    def publish(self, i: int) -> None:
        """Publish the benchmark's `i`-th message now."""
        ...

    def counters(self) -> dict[str, float]:
        """The server's own counters, if it has any (for the ticker's extra columns)."""
        ...

    def close(self) -> None: ...


# -- the message ------------------------------------------------------------------------------


def payload(i: int) -> bytes:
    """A feed entry's `u` as the aggregator writes it (`ticker.commit.feed_payload` of a
    real state: the first 40 minutes of the 2018 day at 1:1000, ~4.8 KB with the curve's
    tail), its totals moved on by `i` so that consecutive entries differ."""
    state = orjson.loads(_real_payload())
    state["gmv_fen"] += i * 1_000
    state["orders"] += i
    return orjson.dumps(state)


@functools.cache
def _real_payload() -> bytes:
    from fractions import Fraction

    from simulator.generator import DayPlan
    from simulator.profile import load
    from ticker.commit import feed_payload
    from ticker.core.aggregate import State
    from ticker.core.batch import Start

    run, plan = "2018-bench-fanout", DayPlan(load("2018"), Fraction(1, 1000), 0, 2_400_000, seed=1)
    state = State()
    state.apply(Start(run, 0, plan.meta()))
    state.apply_many([b.as_orders(run) for b in plan.batches()])
    return feed_payload(state, [])


def tick_text(i: int, position: str) -> bytes:
    """The tick the ticker's server sends for entry `payload(i)` at `position`."""
    state, _ = feed.parse_entry({b"u": payload(i)})
    return feed.tick(feed.only({**state, "replay": None}, feed.ALL_TOPICS), position).encode()


def now_position() -> str:
    return f"{int(time.time() * 1000)}-0"


# -- starting and stopping ---------------------------------------------------------------------


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_port(port: int, proc: "subprocess.Popen[bytes]", log: IO[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(log.read().decode(errors="replace")[-3000:]) from None
            time.sleep(0.1)


class TickerPeer:
    """A private `ticker serve` on a fresh namespace of the benchmark's Redis."""

    name = "ticker"
    greeting = 2  # hello, snapshot

    def __init__(self, redis_url: str) -> None:
        import redis

        from ticker.bench.common import fresh_namespace

        self.redis_url, self.ns = redis_url, fresh_namespace("fanout")
        self.keys = Keys(self.ns)
        self.r = redis.Redis.from_url(redis_url)
        self.r.xadd(self.keys.feed, {"u": payload(0)})  # the snapshot every client gets
        self.port = free_port()
        command = "ulimit -n $(ulimit -Hn); exec " + " ".join(
            [
                *(sys.executable, "-m", "ticker", "serve", "--port", str(self.port)),
                *("--max-clients", "20000", "--max-connects-per-ip", "1000000"),
                *("--redis-url", redis_url, "--namespace", self.ns),
            ]
        )
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(["sh", "-c", command], stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}/"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    _stop(self.proc)
                    self.log.seek(0)
                    raise RuntimeError(self.log.read().decode(errors="replace")[-3000:]) from None
                time.sleep(0.1)

    def publish(self, i: int) -> None:
        self.r.xadd(self.keys.feed, {"u": payload(i)}, maxlen=10_000)

    def counters(self) -> dict[str, Any]:
        """The server's /metrics counters (totals; the disconnects by reason)."""
        out: dict[str, Any] = {"disconnects": {}}
        with urllib.request.urlopen(self.url + "metrics", timeout=120) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, value = line.rsplit(" ", 1)
                if name.startswith('ticker_disconnects_total{reason="'):
                    out["disconnects"][name.split('"')[1]] = float(value)
                elif "{" not in name:
                    out[name] = float(value)
        return out

    def close(self) -> None:
        from ticker.bench.common import drop_namespace

        _stop(self.proc)
        self.log.close()
        self.r.close()
        drop_namespace(self.redis_url, self.ns)


def nchan_module() -> str | None:
    """The nchan module's path, if nginx and the module are installed."""
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        return None
    return next((p for p in NCHAN_MODULE_PATHS if os.path.exists(p)), None)


NGINX_CONF = """\
load_module {module};
{user}
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = /sub {{
            nchan_subscriber websocket;
            nchan_channel_id bench;
            nchan_subscriber_first_message oldest;  # the one message kept: the greeting
            nchan_websocket_ping_interval 10;  # as the ticker's heartbeat
        }}
        location = /pub {{
            nchan_publisher http;
            nchan_channel_id bench;
            nchan_message_buffer_length 1;
        }}
    }}
}}
"""


class NchanPeer:
    """nginx + nchan: a master and `workers` worker processes (default: one per core)."""

    name = "nchan"
    greeting = 1

    def __init__(self, workers: int = 0) -> None:
        module = nchan_module()
        if module is None:
            raise Unavailable(f"nginx with the nchan module is not installed: {NCHAN_INSTALL}")
        self.dir = tempfile.TemporaryDirectory(prefix="bench-nchan-")
        d = Path(self.dir.name)
        self.port = free_port()
        conf = NGINX_CONF.format(
            module=module,
            user="user root;" if os.geteuid() == 0 else "",  # its workers may read the dir
            workers=workers or "auto",
            dir=d,
            port=self.port,
        )
        (d / "nginx.conf").write_text(conf)
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [*RAISED_NOFILE, nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
            stdout=self.log,
            stderr=self.log,
        )
        self.pid = self.proc.pid
        try:
            _wait_port(self.port, self.proc, self.log)
        except BaseException:
            _stop(self.proc)
            raise
        self.ws_url = f"ws://127.0.0.1:{self.port}/sub"
        self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def publish(self, i: int) -> None:
        self.http.request("POST", "/pub", body=tick_text(i, now_position()))
        resp = self.http.getresponse()
        resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"nchan refused a publication: HTTP {resp.status}")

    def counters(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.http.close()
        _stop(self.proc)
        self.log.close()
        self.dir.cleanup()


class WebsocketsPeer:
    """A `websockets` server (this module's `serve_broadcast`, in its own process)."""

    name = "websockets"
    greeting = 1

    def __init__(self) -> None:
        from websockets.sync.client import connect

        self.port = free_port()
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*RAISED_NOFILE, sys.executable, "-m", __name__, "websockets", str(self.port)],
            stdout=self.log,
            stderr=self.log,
        )
        self.pid = self.proc.pid
        self.ws_url = f"ws://127.0.0.1:{self.port}/sub"
        self.stack = contextlib.ExitStack()
        try:
            _wait_port(self.port, self.proc, self.log)
            publisher = connect(f"ws://127.0.0.1:{self.port}/pub", compression=None)
            self.publisher = self.stack.enter_context(publisher)
        except BaseException:
            _stop(self.proc)
            raise

    def publish(self, i: int) -> None:
        self.publisher.send(tick_text(i, now_position()).decode())

    def counters(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.stack.close()
        _stop(self.proc)
        self.log.close()


async def serve_broadcast(port: int) -> None:
    """Serve `/sub` clients: the newest message on connect, then every message published
    on `/pub`, by `websockets.broadcast` (no compression; pings as the ticker's)."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()
    newest: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/pub":
            async for message in ws:
                newest[:] = [str(message)]
                broadcast(clients, message)
            return
        if newest:
            await ws.send(newest[0])
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=10):
        await asyncio.Future()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ticker.bench.peers")
    p.add_argument("peer", choices=["websockets"])
    p.add_argument("port", type=int)
    args = p.parse_args(argv)
    asyncio.run(serve_broadcast(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
