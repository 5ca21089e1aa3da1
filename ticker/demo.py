"""`ticker demo`: everything for one person, as child processes of one command.

The port is bound first (a busy or invalid one is refused in one line before anything
starts) and handed to the server process, so the health check can only reach our server.
Redis comes from --redis-url / REDIS_URL when given and reachable; otherwise an embedded
redis-server keeps an append-only file in the data folder (--data-dir) and is stopped at
the end. Then the aggregator, the server and the replay run as the same `ticker`
subcommands docker-compose.yml uses; the aggregator's and the server's logs go to
`demo.log` in the data folder (or to the terminal with --verbose), so the banner and the
replay's progress bar stay readable. Ctrl-C (or SIGTERM) stops all of them and waits for
each, so no process is left behind.
"""

import argparse
import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ticker.core.clock import format_time_of_day
from ticker.errors import UsageError
from ticker.ports import listen, local_url
from ticker.procs import terminate
from ticker.redis_io import embedded_redis, masked, reachable

NAMESPACE = "demo"
LOG_NAME = "demo.log"


def default_data_dir() -> Path:
    """Where the demo keeps its Redis data and logs: $XDG_STATE_HOME/ticker/demo, else
    ~/.local/state/ticker/demo."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ticker" / "demo"


@contextlib.contextmanager
def _data_dir(path: Path) -> Iterator[Path]:
    """The data folder, locked for this demo (two redis-servers on one folder would
    corrupt its append-only file)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = (path / "lock").open("w")
    except OSError as exc:
        raise UsageError(
            f"cannot use the data folder {path}: {exc.strerror}; pass --data-dir"
        ) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"another `ticker demo` uses the data folder {path}; stop it or pass "
                "--data-dir another-folder"
            ) from None
        yield path


@contextlib.contextmanager
def _redis_for_demo(url: str | None, data_dir: Path) -> Iterator[str]:
    if url and reachable(url):
        print(f"demo: using Redis at {masked(url)}", file=sys.stderr)
        yield url
        return
    if url:
        print(
            f"demo: Redis at {masked(url)} is not reachable; starting an embedded one",
            file=sys.stderr,
        )
    with embedded_redis(data_dir=data_dir) as embedded:
        print(
            f"demo: started an embedded redis-server at {embedded} "
            f"(append-only file in {data_dir})",
            file=sys.stderr,
            flush=True,
        )
        yield embedded


def _wait_healthy(url: str, proc: "subprocess.Popen[bytes]", timeout: float = 30) -> bool:
    """Whether our server answers /healthz. The port is bound by the socket we handed it,
    so nothing else can be answering there; we also stop waiting if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(procs: "list[subprocess.Popen[bytes]]") -> None:
    terminate(*procs, timeout=10)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"    {line}\n" for line in text)


def banner(page: str, token: str, redis_url: str, log: Path | None) -> str:
    """What the person at the demo needs: the page, and the commands that reach this demo."""
    where = f"--redis-url {masked(redis_url)} --namespace {NAMESPACE}"
    logs = f"  Logs of the aggregator and the server: {log}\n" if log else ""
    return (
        f"\n  The ticker is live: open {page}\n"
        f"  With replay controls (pause, speed, seek): {page}?token={token}\n"
        f"  Redis: {masked(redis_url)}, namespace {NAMESPACE}\n"
        f"{logs}"
        "  From another terminal:\n"
        f"    ticker control pause {where}\n"
        f"    ticker watch {page}\n"
        f"    ticker verify {where}\n"
        "  Ctrl-C stops everything.\n"
    )


def run_demo(args: argparse.Namespace) -> int:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    # The profile and the port before anything else: a bad profile or a busy port is one
    # line and nothing is started.
    from ticker.cli import plan_of

    plan_of(args)
    sock = listen(args.host, args.port)
    page = local_url(args.host, sock.getsockname()[1])
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    data_dir: Path = args.data_dir or default_data_dir()
    verbose = bool(args.show_logs or args.verbose)
    with (
        sock,
        _data_dir(data_dir),
        _redis_for_demo(args.redis_url or os.environ.get("REDIS_URL"), data_dir) as url,
        contextlib.ExitStack() as stack,
    ):
        log_path = None if verbose else data_dir / LOG_NAME
        log: IO[bytes] | None = None
        if log_path is not None:
            log = stack.enter_context(log_path.open("wb"))
        base = [sys.executable, "-m", "ticker"]
        common = ["--redis-url", url, "--namespace", NAMESPACE]
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
            procs.append(
                subprocess.Popen(
                    [*base, "aggregate", *common],
                    start_new_session=True,
                    stdout=log,
                    stderr=subprocess.STDOUT if log else None,
                )
            )
            # A fresh control token, so the person at the demo can pause, seek and
            # change speed from the page, and nobody else can.
            token = secrets.token_urlsafe(12)
            server = subprocess.Popen(
                [*base, "serve", "--fd", str(sock.fileno()), "--host", args.host, *common],
                env={**os.environ, "TICKER_CONTROL_TOKEN": token},
                start_new_session=True,
                pass_fds=(sock.fileno(),),
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
            )
            procs.append(server)
            with contextlib.suppress(OSError):
                sock.close()  # the server holds the port now
            if not _wait_healthy(page, server):
                print(
                    f"demo: error: the server did not come up on {page}"
                    + (f"; the end of {log_path}:\n{_tail(log_path)}" if log_path else ""),
                    file=sys.stderr,
                )
                return 1
            print(banner(page, token, url, log_path), file=sys.stderr, flush=True)
            replay = subprocess.Popen([*base, *replay_args], start_new_session=True)
            procs.append(replay)
            announced = False
            while not stop:
                time.sleep(0.2)
                for name, p in zip(("aggregate", "serve"), procs, strict=False):
                    if p.poll() is not None:
                        print(
                            f"\ndemo: error: {name} exited with code {p.returncode}; stopping"
                            + (f"; the end of {log_path}:\n{_tail(log_path)}" if log_path else ""),
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


def add_options(p: argparse.ArgumentParser) -> None:
    """The demo's own options (besides the replay's, --host and --port)."""
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where the embedded Redis keeps its append-only file and the demo its log "
        f"(default: {default_data_dir()})",
    )
    p.add_argument(
        "--verbose",
        dest="show_logs",
        action="store_true",
        help="show the aggregator's and the server's logs here instead of in the log file",
    )
