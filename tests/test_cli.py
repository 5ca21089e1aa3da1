"""The command line as a newcomer meets it: clear one-line errors, right exit codes."""

import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from tests.conftest import UNIT, Ticker, stop
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
    """`ticker --help` names replay, aggregate, serve and demo."""
    result = cli("--help")
    assert result.returncode == 0
    for name in ("replay", "aggregate", "serve", "demo"):
        assert name in result.stdout


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


def test_control_seek_to_24_00_exits_1(ticker: Ticker) -> None:
    """A seek to 24:00 is outside any window: exit 1 naming the window."""
    replay_state(ticker.redis_url, ticker.namespace, beating())
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
