"""The command line as a newcomer meets it: clear one-line errors, right exit codes."""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import UNIT, Ticker, stop
from ticker.core.control import HEARTBEAT_MS
from ticker.keys import Keys
from ticker.redis_io import client, free_port


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--profile", "1999"], "unknown profile '1999'"),
        (["--speed", "0"], "must be above 0"),
        (["--speed", "fast"], "is not a number"),
        (["--from", "25:00"], "past the end of the day"),
        (["--from", "noon"], "is not a time of day"),
        (["--from", "02:00", "--to", "01:00"], "--to 01:00:00 must be after --from 02:00:00"),
        (["--scale", "2"], "at most 1"),
        (["--profile", "/nonexistent/day.toml"], "does not exist"),
    ],
)
def test_bad_replay_arguments_exit_2_with_one_line(args: list[str], says: str) -> None:
    """Each bad argument exits 2 with a single line naming the problem."""
    result = cli("replay", *args, "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["replay", "--scale", "0.001"], ["aggregate"], ["serve"]])
def test_unreachable_redis_is_one_clear_line(command: list[str]) -> None:
    """With no Redis at the URL, each process says so in one line, with no traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = cli(*command, "--redis-url", url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot reach Redis at {url}" in lines[0]
    assert "REDIS_URL" in lines[0]


def test_help_lists_every_subcommand() -> None:
    """`ticker --help` names every command, the extensions' too."""
    result = cli("--help")
    assert result.returncode == 0
    for name in ("replay", "aggregate", "serve", "demo", "bench", "watch", "verify", "live"):
        assert name in result.stdout


def test_a_command_builds_only_its_own_parser_and_imports_no_other_command() -> None:
    """`ticker replay` (and any command) parses with its own parser: the demo's and the
    extensions' modules, which it does not need, are not imported; `-v` may come first."""
    code = (
        "import sys\n"
        "from ticker.cli import build_parser, command_of\n"
        "args = build_parser(command_of(sys.argv[1:])).parse_args(sys.argv[1:])\n"
        "others = ('ticker.demo', 'ticker.bench', 'ticker.watch', 'ticker.live', 'ticker.verify')\n"
        "print(args.command, args.scale, [m for m in others if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "-v", "replay", "--scale", "0.001", "--speed", "max"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["replay", "1/1000", "[]"]
    assert cli("bench", "--help").returncode == 0  # an extension's own parser


# -- `ticker control` refuses what nothing can obey ------------------------------------


def replay_state(redis_url: str, namespace: str, state: dict[str, Any] | None = None) -> Any:
    """Write the replay's state hash (when given) and read it back."""

    async def go() -> Any:
        r = client(redis_url)
        try:
            if state is not None:
                await r.hset(Keys(namespace).replay, "state", orjson.dumps(state))
            raw = await r.hget(Keys(namespace).replay, "state")
            return orjson.loads(raw) if raw else None
        finally:
            await r.aclose()

    return asyncio.run(go())


def beating(state: str = "running") -> dict[str, Any]:
    """A replay state as a live replay writes it (whole day, fresh heartbeat)."""
    day = {"from_ms": 0, "to_ms": 86_400_000, "window_from_ms": 0, "window_to_ms": 86_400_000}
    return {"run": "r", "state": state, "heartbeat_ms": int(time.time() * 1000), **day}


def test_control_without_a_replay_exits_1_saying_so(ticker: Ticker) -> None:
    """No replay in the namespace: exit 1, the reason, and nothing sent."""
    result = ticker.run("control", "pause")
    assert result.returncode == 1
    assert "no replay is running" in result.stderr and ticker.namespace in result.stderr
    assert "sent" not in result.stdout


def test_control_after_the_end_exits_1(ticker: Ticker) -> None:
    """An ended replay refuses a speed change: exit 1 saying it has ended."""
    replay_state(ticker.redis_url, ticker.namespace, beating("ended"))
    result = ticker.run("control", "speed", "600")
    assert result.returncode == 1
    assert "the replay has ended" in result.stderr


@contextlib.contextmanager
def a_live_replay(redis_url: str, namespace: str) -> Iterator[None]:
    """A running replay's heartbeat, written every HEARTBEAT_MS as a replay does (a state
    written once goes stale after STALE_MS, which a busy machine's process start can take)."""
    done = threading.Event()

    def beat() -> None:
        while True:
            replay_state(redis_url, namespace, beating())
            if done.wait(HEARTBEAT_MS / 1000):
                return

    replay_state(redis_url, namespace, beating())
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_control_seek_to_24_00_exits_1(ticker: Ticker) -> None:
    """A seek to 24:00 is outside any window: exit 1 naming the window."""
    with a_live_replay(ticker.redis_url, ticker.namespace):
        result = ticker.run("control", "seek", "24:00")
    assert result.returncode == 1
    assert "outside this replay's window (00:00:00 to 24:00:00)" in result.stderr


def test_control_pause_reaches_a_running_replay(ticker: Ticker) -> None:
    """A running replay gets the pause and its state says paused soon after."""
    replay = ticker.start("replay", "--scale", "0.001", "--speed", "60", "--quiet")
    try:
        wait_for_state(ticker, "running")
        result = ticker.run("control", "pause")
        assert result.returncode == 0, result.stderr
        assert "sent" in result.stdout
        wait_for_state(ticker, "paused")
    finally:
        stop(replay)


def wait_for_state(ticker: Ticker, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout * UNIT
    while (replay_state(ticker.redis_url, ticker.namespace) or {}).get("state") != name:
        assert time.monotonic() < deadline, f"the replay never reported {name}"
        time.sleep(0.05)


# -- commands that tell the truth about ports, Redis, and what they wait for -----------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 with another program listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_serve_on_a_busy_port_is_one_line_suggesting_a_free_one(busy_port: int) -> None:
    """A busy port: exit 2 with `port N is in use; try --port M` before touching Redis."""
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    result = cli("serve", "--port", str(busy_port), "--redis-url", unreachable)
    assert result.returncode == 2
    assert f"port {busy_port} is in use; try --port " in one_line(result)


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_out_of_range_in_one_line(port: str) -> None:
    """An impossible port number exits 2 with one line, nothing started."""
    result = cli("serve", "--port", port)
    assert result.returncode == 2
    assert "must be a port number 1..65535" in one_line(result)


def test_demo_on_a_busy_port_starts_nothing(busy_port: int, tmp_path: Path) -> None:
    """The demo checks its port first: one line, exit 2, no Redis, no data folder."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "ticker", "demo", "--port", str(busy_port), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert f"port {busy_port} is in use; try --port " in one_line(result)
    assert not data.exists()


def test_demo_with_a_bad_profile_starts_nothing(tmp_path: Path) -> None:
    """A profile the replay would refuse is refused by the demo first: one line, exit 2."""
    data = tmp_path / "data"
    result = cli("demo", "--profile", "/nonexistent/day.toml", "--data-dir", str(data))
    assert result.returncode == 2
    assert "does not exist" in one_line(result)
    assert not data.exists()


def test_a_lone_replay_says_it_waits_for_an_aggregator(ticker: Ticker) -> None:
    """With no aggregator, the replay soon says it waits, with the backlog and the command."""
    replay = ticker.start("replay", "--scale", "0.001", "--speed", "max")
    wanted = f"--redis-url {ticker.redis_url} --namespace {ticker.namespace}`"
    try:
        deadline = time.monotonic() + 30 * UNIT
        while "waiting for an aggregator:" not in ticker.output(replay):
            assert time.monotonic() < deadline and replay.poll() is None, ticker.output(replay)
            time.sleep(0.1)
    finally:
        stop(replay)
    line = next(x for x in ticker.output(replay).splitlines() if "waiting for an aggr" in x)
    assert "entries written are not yet consumed" in line
    assert f"start one with `ticker aggregate {wanted}" in line


def test_redis_passwords_are_masked_in_messages() -> None:
    """A Redis URL's password never reaches a message: it reads ****."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = cli("replay", "--scale", "0.001", "--redis-url", url)
    line = one_line(result)
    assert "hunter2" not in line and ":****@127.0.0.1" in line


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("not-a-url", 2, "'not-a-url' is not a feed address: it has no scheme"),
        ("ftp://host/", 2, "unknown scheme 'ftp'"),
        ("http://127.0.0.1:99999/", 2, "port is not a number"),
        ("http://nosuch.invalid/", 1, "cannot reach the feed at ws://nosuch.invalid/ws: unknown"),
    ],
)
def test_watch_on_a_bad_address_says_what_is_wrong(url: str, code: int, says: str) -> None:
    """A malformed address exits 2, an unreachable one 1, each with one line."""
    result = cli("watch", url)
    assert result.returncode == code
    assert says in one_line(result)


def test_watch_with_nothing_listening_says_so() -> None:
    """Nothing listening at the address: exit 1 saying so and what to start."""
    result = cli("watch", f"http://127.0.0.1:{free_port()}/")
    assert result.returncode == 1
    assert "connection refused" in one_line(result) and "ticker serve" in one_line(result)
