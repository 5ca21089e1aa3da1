"""Fan-out: one `ticker serve` process pushing feed updates to thousands of websocket clients.

The orchestrator (this process) starts a private `ticker serve`, a load generator in a
separate process (its own core and event loop: asyncio + aiohttp's websocket client), and
writes synthetic feed entries straight into the feed stream with XADD at a fixed rate,
each carrying the aggregator's payload shape (`u`: a full public state, ~4.6 KB of JSON).

Measured per (clients, updates/s): messages delivered per second, latency from the feed
entry (its id's millisecond timestamp, Redis's clock) to receipt in the load generator
(same machine, same clock), server CPU (utime + stime from /proc/PID/stat), bytes on the
wire per message (TCP bytes_sent of the server's sockets, from `ss -ti`, over the
messages the server sent), and server RSS per idle client (RSS with the
clients connected and idle minus RSS before they connected, divided by the clients).

The latency includes the server's tick interval (the hub hands out at most 10 ticks a
second, so an entry waits 0-100 ms for its broadcast) and the load generator's own queueing
when it is busy: its CPU is reported too, and a saturated load generator inflates the tail.

    python -m ticker.bench.fanout --clients 1000,5000,10000 --rates 10,5 --seconds 10
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from typing import IO, Any

import orjson

from ticker.keys import Keys
from ticker.redis_io import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- measuring a process ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def sent_bytes(port: int) -> int:
    """TCP payload bytes sent so far on the established connections from `port` (`ss -ti`).

    Connections that closed meanwhile drop out of the sum; the benchmark's do not close.
    """
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    sent = re.findall(r"bytes_sent:(\d+)", out) or re.findall(r"bytes_acked:(\d+)", out)
    return sum(int(x) for x in sent)


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65_536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


# -- the synthetic feed entry ---------------------------------------------------------------


def payload(i: int) -> bytes:
    """A feed entry's `u` with the aggregator's shape and realistic sizes (ten-entry tops)."""
    gmv = 100_000_000 * (i + 1)
    names = [f"Category {k}" for k in range(10)]
    state = {
        "run": "2018-bench-fanout",
        "profile": "2018",
        "title": "11.11 Global Shopping Festival 2018",
        "scale": "1",
        "from_ms": 0,
        "to_ms": 86_400_000,
        "sim_time_ms": i * 100,
        "sim_time": time.strftime("%H:%M:%S", time.gmtime(i / 10)) + ".000",
        "gmv_fen": gmv,
        "orders": gmv // 20_500,
        "gmv_fen_per_s": 1_234_567_890 + i,
        "orders_per_s": 60_000 + i % 100,
        "top_categories": [
            {"name": n, "gmv_fen": gmv // (k + 2), "orders": gmv // (k + 2) // 20_500}
            for k, n in enumerate(names)
        ],
        "top_countries": [
            {"name": f"Country {k}", "gmv_fen": gmv // (k + 9), "orders": gmv // (k + 9) // 20_500}
            for k in range(10)
        ],
        "milestones": [
            {
                "id": "gmv_1bn",
                "label": "RMB 1bn",
                "metric": "gmv_fen",
                "threshold": 100_000_000_000,
                "documented": "00:00:20",
                "sim_time_ms": 19_999,
                "sim_time": "00:00:19.999",
            }
        ],
        "upcoming": [
            {
                "id": f"gmv_{k}bn",
                "label": f"RMB {k}bn",
                "metric": "gmv_fen",
                "threshold": k * 100_000_000_000,
                "documented": "22:21",
            }
            for k in (10, 19, 50, 100, 168, 200)
        ],
        "last_year_gmv_fen": 16_820_000_000_000,
        "last_year_points": [
            [0, 0],
            [181_000, 1_000_000_000_000],
            [86_400_000, 16_820_000_000_000],
        ],
        "usd_rate": "6.931",
        "sample_orders": [
            {"at_ms": i * 100 + k, "amt_fen": 10_000 + k, "seller": "Japan", "buyer": "Zhejiang"}
            for k in range(8)
        ],
        "brands_over_100m": 237,
        "top_brands": [
            {"id": k, "name": f"Brand {k}", "gmv_fen": gmv // (k + 20)} for k in range(10)
        ],
        "ended": False,
        "duplicates": 0,
        "dead_letters": 0,
        "fired": [],
    }
    return orjson.dumps(state)


class Writer:
    """Writes feed entries at `rate` per second from a thread until stopped."""

    def __init__(self, redis_url: str, keys: Keys, rate: float) -> None:
        import redis

        self.r = redis.Redis.from_url(redis_url)
        self.keys, self.rate, self.written = keys, rate, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.r.xadd(self.keys.feed, {"u": payload(self.written)}, maxlen=10_000)
            self.written += 1
            wait = start + self.written / self.rate - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.r.close()


# -- the load generator (a separate process) -------------------------------------------------


async def _loadgen(url: str, clients: int, deflate: bool, connect_concurrency: int) -> None:
    """Connect `clients` websockets, then obey `go` / `stop` / `quit` lines on stdin."""
    import aiohttp

    raise_nofile()
    lat: list[int] = []
    counting = False
    received = 0
    received_bytes = 0
    errors: dict[str, int] = {}

    async def one(session: aiohttp.ClientSession, gate: asyncio.Semaphore) -> None:
        nonlocal received, received_bytes
        async with gate:
            try:
                ws = await session.ws_connect(url, compress=15 if deflate else 0, autoping=True)
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                connected.append(False)
                return
            await ws.receive()  # hello
            await ws.receive()  # snapshot
            connected.append(True)
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                if counting:
                    now_ms = time.time() * 1000
                    d: str = msg.data
                    p = d.find('"position":"') + 12
                    lat.append(int(now_ms - int(d[p : d.index("-", p)])))
                    received += 1
                    received_bytes += len(d)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            closed.append(ws.close_code)

    connected: list[bool] = []
    closed: list[int | None] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(connect_concurrency)
        started = time.monotonic()
        tasks = [asyncio.create_task(one(session, gate)) for _ in range(clients)]
        while len(connected) < clients:
            await asyncio.sleep(0.05)
        _say(
            {
                "event": "connected",
                "ok": sum(connected),
                "failed": clients - sum(connected),
                "seconds": round(time.monotonic() - started, 2),
                "errors": errors,
            }
        )
        cpu0 = t0 = 0.0
        while line := (await reader.readline()).decode().strip():
            if line == "go":
                lat.clear()
                received = received_bytes = 0
                counting, cpu0, t0 = True, time.process_time(), time.monotonic()
                _say({"event": "going"})
            elif line == "stop":
                counting = False
                elapsed = time.monotonic() - t0
                _say(
                    {
                        "event": "stopped",
                        "received": received,
                        "received_payload_bytes": received_bytes,
                        "elapsed": elapsed,
                        "loadgen_cpu_pct": round(100 * (time.process_time() - cpu0) / elapsed, 1),
                        "latency_ms": percentiles(lat),
                        "closed_early": len(closed),
                        "errors": errors,
                    }
                )
            elif line == "quit":
                break
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": 0, "p99": 0, "max": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "p50": v[len(v) // 2],
        "p99": v[min(len(v) - 1, int(len(v) * 0.99))],
        "max": v[-1],
    }


# -- the orchestrator -------------------------------------------------------------------------


class LoadGen:
    def __init__(self, url: str, clients: int, deflate: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ticker.bench.fanout", "--loadgen", url, str(clients)]
            + (["--deflate"] if deflate else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self, timeout: float = 300) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(f"load generator gave no answer (exit {self.proc.poll()})")
        return dict(json.loads(result[0]))

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tell("quit")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Server:
    def __init__(self, redis_url: str, ns: str) -> None:
        self.port = free_port()
        command = "ulimit -n $(ulimit -Hn); exec " + " ".join(
            [
                sys.executable,
                "-m",
                "ticker",
                "serve",
                "--port",
                str(self.port),
                "--max-clients",
                "20000",
                "--max-connects-per-ip",
                "1000000",
                "--redis-url",
                redis_url,
                "--namespace",
                ns,
            ]
        )
        import tempfile

        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(["sh", "-c", command], stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(self.output()) from None
                time.sleep(0.1)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "metrics", timeout=120) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    def disconnects(self) -> dict[str, float]:
        """ticker_disconnects_total by reason, so far."""
        out: dict[str, float] = {}
        with urllib.request.urlopen(self.url + "metrics", timeout=120) as resp:
            for line in resp.read().decode().splitlines():
                m = re.match(r'ticker_disconnects_total\{reason="(\w+)"\} (\S+)', line)
                if m:
                    out[m[1]] = float(m[2])
        return out

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure(
    redis_url: str, clients: int, rates: list[float], seconds: float, deflate: bool
) -> list[dict[str, Any]]:
    """One fresh server, `clients` load-generator clients, one window per rate."""
    from ticker.bench.common import drop_namespace, fresh_namespace

    ns = fresh_namespace("fanout")
    keys = Keys(ns)
    import redis

    r = redis.Redis.from_url(redis_url)
    r.xadd(keys.feed, {"u": payload(0)})  # the snapshot every client gets on connect
    r.close()
    server = Server(redis_url, ns)
    pid = server.proc.pid
    rows: list[dict[str, Any]] = []
    gen: LoadGen | None = None
    try:
        time.sleep(1.0)
        rss_before = rss_bytes(pid)
        gen = LoadGen(server.url.replace("http://", "ws://") + "ws", clients, deflate)
        conn = gen.read()
        time.sleep(2.0)  # let the last snapshots drain and the allocator settle
        rss_idle = rss_bytes(pid)
        for rate in rates:
            gen.tell("go")
            gen.read()
            cpu0, wire0 = cpu_seconds(pid), sent_bytes(server.port)
            sent0, t0 = server.metric("ticker_messages_sent_total"), time.monotonic()
            with Writer(redis_url, keys, rate) as w:
                time.sleep(seconds)
            elapsed = time.monotonic() - t0
            cpu1 = cpu_seconds(pid)
            time.sleep(0.5)  # the last entries' ticks reach the clients
            gen.tell("stop")
            got = gen.read()
            wire1 = sent_bytes(server.port)
            sent = server.metric("ticker_messages_sent_total") - sent0
            rows.append(
                {
                    "clients": clients,
                    "connected": conn["ok"],
                    "deflate": deflate,
                    "updates_per_s": rate,
                    "entries_written": w.written,
                    "seconds": round(elapsed, 1),
                    "delivered_msgs_per_s": round(got["received"] / got["elapsed"]),
                    "per_client_msgs_per_s": round(got["received"] / got["elapsed"] / clients, 2),
                    "latency_ms": got["latency_ms"],
                    "server_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
                    "server_cpu_us_per_msg": round(1e6 * (cpu1 - cpu0) / max(1, sent), 1),
                    "server_msgs_sent": int(sent),
                    "wire_bytes_per_msg": round((wire1 - wire0) / max(1, sent)),
                    "payload_bytes_per_msg": round(
                        got["received_payload_bytes"] / max(1, got["received"])
                    ),
                    "loadgen_cpu_pct": got["loadgen_cpu_pct"],
                    "rss_idle_per_client_kb": round((rss_idle - rss_before) / clients / 1024, 1),
                    "rss_after_traffic_per_client_kb": round(
                        (rss_bytes(pid) - rss_before) / clients / 1024, 1
                    ),
                    "server_rss_mb": round(rss_bytes(pid) / 2**20, 1),
                    "connect_seconds": conn["seconds"],
                    "closed_early": got["closed_early"],
                    "loadgen_errors": got["errors"],
                    "server_disconnects": server.disconnects(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
            )
    finally:
        if gen is not None:
            gen.close()
        server.close()
        drop_namespace(redis_url, ns)
    return rows


def run_fanout(
    redis_url: str,
    counts: list[int],
    rates: list[float],
    seconds: float,
    deflate_counts: list[int],
) -> dict[str, Any]:
    """The table: every count at every rate without deflate; deflate on at deflate_counts."""
    raise_nofile()
    rows: list[dict[str, Any]] = []
    for n in counts:
        rows += measure(redis_url, n, rates, seconds, deflate=False)
    compare: list[dict[str, Any]] = []
    for n in (c for c in deflate_counts if c > 0):  # 0 = skip the deflate comparison
        for deflate in (False, True):
            compare += measure(redis_url, n, rates[:1], seconds, deflate=deflate)
    target = next(
        (r for r in rows if r["clients"] == max(counts) and r["updates_per_s"] == min(rates)), None
    )
    targets = []
    if target is not None:
        targets = [
            {
                "what": f"p99 feed entry -> client at {target['clients']:,} clients, "
                f"{target['updates_per_s']:g}/s (ms)",
                "target": "<= 150",
                "value": target["latency_ms"]["p99"],
                "met": target["latency_ms"]["p99"] <= 150,
            },
            {
                "what": "server RSS per idle client (KB)",
                "target": "<= 30",
                "value": target["rss_idle_per_client_kb"],
                "met": target["rss_idle_per_client_kb"] <= 30,
            },
        ]
    return {"rows": rows, "deflate": compare, "targets": targets, "exact": True}


def print_table(result: dict[str, Any]) -> None:
    head = (
        f"{'clients':>7} {'defl':>5} {'upd/s':>5} {'msgs/s':>8} {'p50':>5} {'p99':>5} "
        f"{'max':>5} {'srvCPU%':>7} {'genCPU%':>7} {'B/msg':>6} {'KB/idle':>7} {'KB/act':>7}"
    )
    for title, rows in (("fan-out", result["rows"]), ("permessage-deflate", result["deflate"])):
        if not rows:
            continue
        print(f"\n== {title}\n  {head}")
        for r in rows:
            lat = r["latency_ms"]
            print(
                f"  {r['connected']:>7,} {('on' if r['deflate'] else 'off'):>5} "
                f"{r['updates_per_s']:>5g} {r['delivered_msgs_per_s']:>8,} {lat['p50']:>5} "
                f"{lat['p99']:>5} {lat['max']:>5} {r['server_cpu_pct']:>7} "
                f"{r['loadgen_cpu_pct']:>7} {r['wire_bytes_per_msg']:>6,} "
                f"{r['rss_idle_per_client_kb']:>7} {r['rss_after_traffic_per_client_kb']:>7}"
            )
    for t in result["targets"]:
        met = "met" if t["met"] else "NOT met"
        print(f"  target {t['what']}: {t['target']} -> {t['value']} ({met})")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ticker.bench.fanout", description=__doc__)
    p.add_argument("--loadgen", nargs=2, metavar=("URL", "CLIENTS"), help=argparse.SUPPRESS)
    p.add_argument("--deflate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--clients", type=_ints, default=[1000, 5000, 10000])
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[10.0, 5.0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--deflate-clients", type=_ints, default=[1000])
    p.add_argument("--redis-url")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.loadgen:
        url, n = args.loadgen
        asyncio.run(_loadgen(url, int(n), args.deflate, 100))
        return 0
    from ticker.bench.common import bench_redis

    with bench_redis(args.redis_url) as url:
        result = run_fanout(url, args.clients, args.rates, args.seconds, args.deflate_clients)
    result["load_average_after"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
