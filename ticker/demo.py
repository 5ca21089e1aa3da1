"""`ticker demo`: everything for one person, as child processes of one command.

Redis comes from --redis-url / REDIS_URL when given and reachable; otherwise an embedded
redis-server is started on a free port and stopped at the end. Then the aggregator, the
server and the replay run as the same `ticker` subcommands docker-compose.yml uses. Ctrl-C
(or SIGTERM) stops all of them and waits for each, so no process is left behind.
"""

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from ticker.core.clock import format_time_of_day
from ticker.redis_io import embedded_redis, reachable


@contextlib.contextmanager
def _redis_for_demo(url: str | None) -> Iterator[str]:
    if url and reachable(url):
        print(f"demo: using Redis at {url}", file=sys.stderr)
        yield url
        return
    if url:
        print(f"demo: Redis at {url} is not reachable; starting an embedded one", file=sys.stderr)
    with embedded_redis() as embedded:
        print(f"demo: started an embedded redis-server at {embedded}", file=sys.stderr)
        yield embedded


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_demo(args: argparse.Namespace) -> int:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with _redis_for_demo(args.redis_url or os.environ.get("REDIS_URL")) as url:
        base = [sys.executable, "-m", "ticker"]
        common = ["--redis-url", url, "--namespace", "demo"]
        speed = "max" if args.speed is None else f"{args.speed:g}"
        replay_args = [
            "replay",
            "--profile",
            args.profile,
            "--speed",
            speed,
            "--scale",
            str(args.scale),
            "--seed",
            str(args.seed),
            "--from",
            format_time_of_day(args.from_ms),
            "--to",
            format_time_of_day(args.to_ms),
            *common,
        ]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            # Children ignore the terminal's Ctrl-C (own session); we stop them in order.
            procs.append(subprocess.Popen([*base, "aggregate", *common], start_new_session=True))
            # A fresh control token, so the person at the demo can pause, seek and
            # change speed from the page, and nobody else can.
            token = secrets.token_urlsafe(12)
            server = subprocess.Popen(
                [*base, "serve", "--host", args.host, "--port", str(args.port), *common],
                env={**os.environ, "TICKER_CONTROL_TOKEN": token},
                start_new_session=True,
            )
            procs.append(server)
            page = f"http://{args.host}:{args.port}/"
            if not _wait_healthy(page, server):
                print(
                    f"demo: error: the server did not come up on {page} (is the port in "
                    "use? try --port 8081)",
                    file=sys.stderr,
                )
                return 1
            replay = subprocess.Popen([*base, *replay_args], start_new_session=True)
            procs.append(replay)
            print(
                f"\n  The ticker is live: open {page}\n"
                f"  With replay controls (pause, speed, seek): {page}?token={token}\n"
                "  Ctrl-C stops everything.\n",
                file=sys.stderr,
                flush=True,
            )
            announced = False
            while not stop:
                time.sleep(0.2)
                for name, p in zip(("aggregate", "serve"), procs, strict=False):
                    if p.poll() is not None:
                        print(
                            f"demo: error: {name} exited with code {p.returncode}; stopping",
                            file=sys.stderr,
                        )
                        return 1
                if replay.poll() is not None and not announced:
                    announced = True
                    print(
                        f"demo: replay finished (code {replay.returncode}); the page stays "
                        f"up at {page} until Ctrl-C",
                        file=sys.stderr,
                        flush=True,
                    )
            print("\ndemo: stopping", file=sys.stderr)
            return 0
        finally:
            _stop(list(reversed(procs)))
