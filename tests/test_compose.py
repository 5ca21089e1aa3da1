"""docker-compose.yml runs the same commands the tests run as processes."""

import shlex
from pathlib import Path

import yaml

from ticker.cli import build_parser

COMPOSE = yaml.safe_load((Path(__file__).parent.parent / "docker-compose.yml").read_text())


def ticker_command(service: str) -> list[str]:
    script = COMPOSE["services"][service]["command"][-1]
    tail = script.split("exec ticker ", 1)[1]
    return shlex.split(tail)


def test_compose_services_use_valid_ticker_commands() -> None:
    """Each ticker service's command parses with the real CLI and reaches Redis by REDIS_URL."""
    commands = {s: ticker_command(s) for s in ("aggregator", "server", "simulator")}
    assert [c[0] for c in commands.values()] == ["aggregate", "serve", "replay"]
    for args in commands.values():
        build_parser().parse_args(args)
    env = COMPOSE["x-ticker"]["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert {"redis", "aggregator", "server", "simulator"} <= set(COMPOSE["services"])


def test_compose_redis_keeps_an_append_only_file() -> None:
    """The compose Redis persists with AOF, which exactly-once across restarts relies on."""
    assert "--appendonly" in COMPOSE["services"]["redis"]["command"]
