"""docker-compose.yml runs the same commands the tests run as processes."""

import json
import re
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from ticker.cli import build_parser
from ticker.redis_io import is_cluster

COMPOSE = yaml.safe_load((Path(__file__).parent.parent / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
TICKER_IMAGE = "festival-ticker:local"
CLUSTER = {name for name, s in SERVICES.items() if "cluster" in s.get("profiles", [])}


def ticker_command(service: str) -> list[str]:
    """A ticker service's command: the arguments of the image's entrypoint, `ticker`."""
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def ticker_services() -> list[str]:
    """The services that run the ticker's image."""
    return sorted(n for n, s in SERVICES.items() if s.get("image") == TICKER_IMAGE)


def nginx_conf() -> str:
    """The proxy's nginx.conf as nginx reads it (compose turns `$$` into `$`)."""
    content: str = COMPOSE["configs"]["nginx-conf"]["content"]
    return content.replace("$$", "$")


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


def test_the_default_services_are_not_in_the_cluster_profile() -> None:
    """`docker compose up` runs the single-Redis ticker exactly as before."""
    for name in ("redis", "aggregator", "server", "simulator"):
        assert "profiles" not in SERVICES[name], name
        assert SERVICES[name].get("depends_on", {}).keys() <= {"redis"}
        assert SERVICES[name].get("environment", {}).get("REDIS_URL", "redis://redis:6379/0") == (
            "redis://redis:6379/0"
        )
    assert not any(name in CLUSTER for name in ("redis", "aggregator", "server", "simulator"))


def test_cluster_profile_ticker_services_parse_with_the_real_cli() -> None:
    """Two aggregators sharing 4 shards, two servers, one replay of 4 shards, all on the
    cluster by REDIS_URL, started once the cluster is created."""
    ticker = CLUSTER & set(ticker_services())
    commands = {n: ticker_command(n) for n in sorted(ticker)}
    kinds = sorted(c[0] for c in commands.values())
    assert kinds == ["aggregate", "aggregate", "replay", "serve", "serve"]
    parser = build_parser()
    for name, args in commands.items():
        parsed = parser.parse_args(args)
        if args[0] in ("aggregate", "replay"):
            assert parsed.shards == 4, name
        if args[0] == "serve":
            assert (parsed.host, parsed.port) == ("0.0.0.0", 8080), name
        service = SERVICES[name]
        assert is_cluster(service["environment"]["REDIS_URL"]), name
        assert service["depends_on"]["cluster-init"]["condition"] == (
            "service_completed_successfully"
        )
    names = [parser.parse_args(commands[n]).name for n in commands if commands[n][0] == "aggregate"]
    assert len(set(names)) == 2  # distinct consumers in the group


def test_cluster_profile_has_three_primaries_with_a_replica_each() -> None:
    nodes = sorted(n for n in CLUSTER if n.startswith("redis-node-"))
    assert len(nodes) >= 6
    for n in nodes:
        command = SERVICES[n]["command"]
        options = dict(zip(command[1::2], command[2::2], strict=False))
        assert options["--cluster-enabled"] == "yes", n
        assert options["--appendonly"] == "yes", n
        assert "healthcheck" in SERVICES[n], n
    init = SERVICES["cluster-init"]
    script = init["command"][-1]
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert "--cluster-yes" in script
    assert "cluster_slots_assigned:16384" in script  # idempotent: skips a created cluster
    assert len(nodes) // 2 >= 3  # --cluster-replicas 1: half the nodes are primaries
    for n in nodes:
        assert n in script
        assert init["depends_on"][n]["condition"] == "service_healthy"
    for n in nodes[:3]:  # the seeds of the ticker processes' URL
        assert f"{n}:6379" in COMPOSE["x-ticker-cluster"]["environment"]["REDIS_URL"]


def test_cluster_profile_proxy_upgrades_websockets_and_balances_both_servers() -> None:
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "8081:80" in proxy["ports"]
    assert proxy["configs"] == [{"source": "nginx-conf", "target": "/etc/nginx/nginx.conf"}]
    conf = nginx_conf()
    assert "proxy_http_version 1.1;" in conf
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade;", conf)
    assert re.search(r"proxy_set_header Connection \$connection_upgrade;", conf)
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{[^}]*default upgrade;", conf)
    assert "proxy_set_header Host $http_host;" in conf  # port kept: the Origin check
    timeout = re.search(r"proxy_read_timeout (\d+)([smh]);", conf)
    assert timeout and int(timeout[1]) * {"s": 1, "m": 60, "h": 3600}[timeout[2]] >= 600
    upstreams = re.findall(r"server (\S+):8080", conf)
    assert sorted(upstreams) == ["server-1", "server-2"]
    assert {"server-1", "server-2"} <= set(proxy["depends_on"])
    assert not re.search(r"(?<!\$)\$(?!\$)", COMPOSE["configs"]["nginx-conf"]["content"])


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON Schema, as check-jsonschema ships it (vendored there
    from github.com/compose-spec/compose-spec, schema/compose-spec.json)."""
    vendor = pytest.importorskip("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((resources.files(vendor) / "compose-spec.json").read_text())
    return schema


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose Specification's JSON Schema."""
    validator = Draft202012Validator(compose_schema())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_the_schema_check_rejects_a_misspelt_key() -> None:
    """The schema is strict enough to catch a typo in a service."""
    broken = {**COMPOSE, "services": {**SERVICES, "server": {**SERVICES["server"], "comand": []}}}
    assert not Draft202012Validator(compose_schema()).is_valid(broken)


def test_every_ticker_service_runs_the_one_image_built_here() -> None:
    """One image built from the Dockerfile (`build: .`); nothing installed at start."""
    services = ticker_services()
    assert {"aggregator", "server", "simulator", "server-1", "aggregator-2"} <= set(services)
    for name in services:
        assert SERVICES[name]["build"] in (".", {"context": "."}), name
        assert SERVICES[name]["pull_policy"] == "never", name
        assert "volumes" not in SERVICES[name], name  # the image carries everything
        assert "INSTALL" not in SERVICES[name].get("environment", {}), name
    assert (Path(__file__).parent.parent / "Dockerfile").is_file()


def test_every_ticker_service_command_is_a_real_subcommand_with_valid_options() -> None:
    """Each command parses with the real CLI (the image's entrypoint is `ticker`)."""
    parser = build_parser()
    subcommands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name in ticker_services():
        args = ticker_command(name)
        assert args[0] in subcommands, name
        parser.parse_args(args)  # exits (SystemExit) on an unknown option
