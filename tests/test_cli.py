"""The command line as a newcomer meets it: clear one-line errors, right exit codes."""

import subprocess
import sys

import pytest

from ticker.redis_io import free_port


def ticker(*args: str) -> subprocess.CompletedProcess[str]:
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
    result = ticker("replay", *args, "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["replay", "--scale", "0.001"], ["aggregate"], ["serve"]])
def test_unreachable_redis_is_one_clear_line(command: list[str]) -> None:
    """With no Redis at the URL, each process says so in one line, with no traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = ticker(*command, "--redis-url", url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot reach Redis at {url}" in lines[0]
    assert "REDIS_URL" in lines[0]


def test_help_lists_every_subcommand() -> None:
    """`ticker --help` names replay, aggregate, serve and demo."""
    result = ticker("--help")
    assert result.returncode == 0
    for name in ("replay", "aggregate", "serve", "demo"):
        assert name in result.stdout
