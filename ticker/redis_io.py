"""Connecting to Redis (one server or a Redis Cluster) with clear errors; an embedded
redis-server for one person, and a local Redis Cluster for tests and benchmarks.

URLs: `redis://host:port/db`, `rediss://…` (TLS), `unix:///path.sock` for one server;
`redis+cluster://host:port` (or `rediss+cluster://…`) for a cluster, where several seed
nodes may be listed, `redis+cluster://h1:7000,h2:7000`, so that a client can start while
one of them is down. A cluster has only database 0.
"""

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ticker.errors import RedisUnavailable, UsageError

# Errors after which a process waits and reconnects instead of failing. On a cluster, a
# failover shows as ConnectionError (the dead primary), and as CLUSTERDOWN, a slot briefly
# not covered or TRYAGAIN while the nodes agree on the new primary (redis-py retries these
# itself first, about ten times, then raises them).
TRANSIENT: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)

# One Redis or a cluster: both answer the same commands (keys of one command, script or
# transaction must share a slot on a cluster: the ticker's keys share a `{hash tag}`).
Client: TypeAlias = "aioredis.Redis | RedisCluster"

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
URL_FORMS = "redis://host:port/db, rediss://…, unix:///path or redis+cluster://host:port"

# Seconds a reply may take; above any BLOCK the ticker asks for (at most 1 s).
CLUSTER_SOCKET_TIMEOUT = 10.0


def is_cluster(url: str) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def client(url: str) -> Client:
    """A client that answers bytes (the orders' columns are binary): a `redis.asyncio.Redis`,
    or for a cluster URL a `redis.asyncio.cluster.RedisCluster` (which connects lazily,
    on its first command)."""
    if is_cluster(url):
        return _cluster_client(url)
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme.lower() not in ("redis", "rediss", "unix"):
        reason = f"unknown scheme {scheme!r}" if scheme else "no scheme"
        raise UsageError(f"invalid Redis URL {url!r}: {reason}; use {URL_FORMS}")
    try:
        return aioredis.Redis.from_url(url, socket_connect_timeout=3, health_check_interval=15)
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL {url!r}: {exc}; use {URL_FORMS}") from None


def _cluster_client(url: str) -> RedisCluster:
    def invalid(reason: str) -> UsageError:
        return UsageError(
            f"invalid Redis Cluster URL {url!r}: {reason}; use "
            "redis+cluster://host:port (or several seeds: redis+cluster://h1:p1,h2:p2)"
        )

    scheme, _, rest = url.partition("://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:  # no path: redis+cluster://host:port?opt=1
        netloc, _, query = netloc.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    if path.strip("/") not in ("", "0"):
        raise invalid(f"a cluster has only database 0, not {unquote(path)!r}")
    seeds: list[tuple[str, int]] = []
    for seed in hosts.split(","):
        try:
            parts = urlsplit(f"//{seed}")
            host, port = parts.hostname, parts.port or 6379
        except ValueError as exc:
            raise invalid(f"{seed!r}: {exc}") from None
        if not host:
            raise invalid("no host")
        seeds.append((host, port))
    # The options (credentials, TLS, query) as redis-py reads them from a one-node URL.
    single = f"{CLUSTER_SCHEMES[scheme.lower()]}://{userinfo}{'@' if userinfo else ''}seed"
    single += f"?{query}" if query else ""
    try:
        options: dict[str, Any] = parse_url(single)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    for name in ("host", "port", "db", "path"):
        options.pop(name, None)
    if options.pop("connection_class", None) is not None:
        options["ssl"] = True
    options.setdefault("socket_connect_timeout", 3)
    options.setdefault("socket_timeout", CLUSTER_SOCKET_TIMEOUT)
    options.setdefault("health_check_interval", 15)
    try:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], **options)
    except (RedisClusterException, TypeError, ValueError) as exc:
        raise invalid(str(exc)) from None


async def connect(url: str) -> Client:
    """Connect and ping, or raise RedisUnavailable with a one-line reason and remedy."""
    r = client(url)
    try:
        await r.ping()
    except (RedisError, RedisClusterException, OSError) as exc:
        await r.aclose()
        remedy = (
            "start the cluster's nodes and check it is created (redis-cli --cluster create "
            "host:port … --cluster-replicas 1), or point --redis-url / REDIS_URL at one"
            if is_cluster(url)
            else "start redis-server or point --redis-url / REDIS_URL at a running one"
        )
        reason = " ".join(str(exc).split()) or "no answer"
        raise RedisUnavailable(
            f"cannot reach Redis{' Cluster' if is_cluster(url) else ''} at {url} "
            f"({exc.__class__.__name__}: {reason}); {remedy}"
        ) from None
    return r


def reachable(url: str) -> bool:
    async def probe() -> bool:
        try:
            r = await connect(url)
        except (RedisUnavailable, UsageError):
            return False
        await r.aclose()
        return True

    return asyncio.run(probe())


async def primaries_with_replicas(r: Client) -> dict[str, list[str]]:
    """Each primary's `host:port` and the `host:port` of its connected replicas.

    For one server: that server and the replicas INFO replication lists. A program that
    wants its writes on a replica before it answers sends WAIT with len(replicas).
    """
    if isinstance(r, RedisCluster):
        nodes: dict[str, dict[str, Any]] = await r.cluster_nodes()
        out: dict[str, list[str]] = {}
        ids: dict[str, str] = {}
        for address, node in nodes.items():
            flags = set(node["flags"].split(","))
            if "master" in flags and not flags & {"fail", "fail?", "noaddr"}:
                out[address] = []
                ids[node["node_id"]] = address
        for address, node in nodes.items():
            flags = set(node["flags"].split(","))
            if "slave" in flags and node["connected"] and node["master_id"] in ids:
                out[ids[node["master_id"]]].append(address)
        return out
    info: dict[str, Any] = await r.info("replication")
    kwargs = r.connection_pool.connection_kwargs
    me = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    replicas = [
        f"{v['ip']}:{v['port']}"
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    ]
    return {me: replicas}


async def wait_for_replicas(r: Client, key: str, replicas: int = 1, timeout_ms: int = 1000) -> int:
    """WAIT for `replicas` replicas of the primary holding `key` to have this client's
    writes; return how many have them. On a cluster, a plain WAIT goes to an arbitrary
    primary (redis-py routes keyless commands to its default node) and proves nothing, so
    it is sent to the node serving `key`'s slot. WAIT counts the writes of the connection
    it runs on: call it right after the writes, with no other command of this client in
    flight on that node.
    """
    if isinstance(r, RedisCluster):
        node = r.get_node_from_key(key)
        count: int = await r.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        return count
    return int(await r.wait(replicas, timeout_ms))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def embedded_redis(appendonly: bool = False) -> Iterator[str]:
    """Run a private redis-server on a free port of 127.0.0.1; yield its URL.

    Uses the `redis-server` binary on PATH (Debian's redis-server package, which this
    machine kind has; `apt-get install redis-server` elsewhere).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            "no Redis configured and no redis-server on PATH; install it "
            "(apt-get install redis-server) or set REDIS_URL"
        )
    with tempfile.TemporaryDirectory(prefix="ticker-redis-") as tmp:
        port = free_port()
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            tmp,
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--logfile",
            str(Path(tmp) / "redis.log"),
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while not _port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RedisUnavailable(f"embedded redis-server failed to start on {port}")
                time.sleep(0.02)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalNode:
    """One redis-server of a local cluster."""

    port: int
    cluster_port: int  # the cluster bus, chosen free too (not port + 10000)
    dir: Path
    args: list[str]
    process: "subprocess.Popen[bytes]"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalCluster:
    """A Redis Cluster of redis-server processes on 127.0.0.1 (see `local_cluster`)."""

    nodes: list[LocalNode]
    base: Path
    node_timeout_ms: int
    url: str = ""  # redis+cluster://127.0.0.1:<first master>, set once created
    history: list[str] = field(default_factory=list)  # what was done to it, for messages

    @property
    def seeds_url(self) -> str:
        """A cluster URL listing every node as a seed: still usable after kills."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, port: int) -> LocalNode:
        return next(n for n in self.nodes if n.port == port)

    def view(self, port: int | None = None) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by `port` (default: any live node), parsed: one dict per
        node with port, id, flags (a set), master_id and slots (a list of (first, last))."""
        for node in self.nodes if port is None else [self.node(port)]:
            if node.alive:
                return _parse_cluster_nodes(_admin(node.port, "CLUSTER", "NODES"))
        raise RedisUnavailable("no node of the local cluster is alive")

    def masters(self) -> list[int]:
        """Ports of the primaries that serve slots, by their first slot."""
        owners = [n for n in self.view() if n["slots"] and "fail" not in n["flags"]]
        return [n["port"] for n in sorted(owners, key=lambda n: n["slots"][0][0])]

    def replicas_of(self, port: int) -> list[int]:
        view = self.view()
        master_id = next(n["id"] for n in view if n["port"] == port)
        return [n["port"] for n in view if n["master_id"] == master_id]

    def master_for_key(self, key: str | bytes) -> int:
        """Port of the primary serving `key`'s slot now."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        return _owner(self.view(), slot)

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        node = self.node(port)
        node.process.send_signal(sig)
        node.process.wait(10)
        self.history.append(f"killed {port}")

    def kill_master_for_key(self, key: str | bytes, timeout: float = 30) -> float:
        """SIGKILL the primary of `key`'s slot, wait until a replica took its slots over and
        every live node says the cluster is ok; return the seconds that took."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        port = self.master_for_key(key)
        start = time.monotonic()
        self.kill(port)
        self.wait_ok(timeout, not_owner=(slot, port))
        return time.monotonic() - start

    def restart(self, port: int, timeout: float = 30) -> None:
        """Start a stopped node again with its config: it rejoins (a killed primary whose
        slots were taken over comes back as a replica of the new one)."""
        node = self.node(port)
        if node.alive:
            return
        node.process = _spawn(node.args, node.dir)
        _wait_port(node, timeout)
        self.history.append(f"restarted {port}")
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30, not_owner: tuple[int, int] | None = None) -> None:
        """Wait until every live node says cluster_state:ok with all slots served by live
        primaries it agrees on, and every live replica's link to its primary is up
        (`not_owner`: also until that (slot, port) pair no longer holds)."""
        deadline = time.monotonic() + timeout
        problem = "not checked"
        while time.monotonic() < deadline:
            problem = self._problem(not_owner)
            if not problem:
                return
            time.sleep(0.05)
        raise RedisUnavailable(
            f"local cluster not ok after {timeout:.0f}s: {problem} "
            f"(after: {', '.join(self.history) or 'start'}; logs in {self.base})"
        )

    def _problem(self, not_owner: tuple[int, int] | None) -> str:
        live = [n for n in self.nodes if n.alive]
        views: list[dict[int, tuple[tuple[int, int], ...]]] = []
        try:
            for node in live:
                info = _admin(node.port, "CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return f"node {node.port} says {_fields(info, 'cluster_state')}"
                view = _parse_cluster_nodes(_admin(node.port, "CLUSTER", "NODES"))
                owners = {}
                for n in view:
                    if n["slots"]:
                        if n["port"] not in {x.port for x in live} or n["flags"] & {"fail"}:
                            return f"node {node.port} still has slots on down node {n['port']}"
                        owners[n["port"]] = tuple(n["slots"])
                views.append(owners)
                if not_owner and _owner(view, not_owner[0]) == not_owner[1]:
                    return f"node {node.port} still sees {not_owner[1]} as the slot's primary"
                me = next(n for n in view if "myself" in n["flags"])
                if "slave" in me["flags"]:
                    repl = _admin(node.port, "INFO", "replication").decode()
                    if "master_link_status:up" not in repl:
                        return f"replica {node.port} not linked to its primary yet"
        except (RedisError, OSError) as exc:
            return f"{exc.__class__.__name__}: {exc}"
        if any(v != views[0] for v in views):
            return "nodes disagree on the slots' primaries"
        return ""

    def stop(self) -> None:
        """Terminate every node and remove their folders."""
        for node in self.nodes:
            if node.alive:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(5)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def local_cluster(
    masters: int = 3,
    replicas: int = 1,
    appendonly: bool = False,
    node_timeout_ms: int = 1000,
    timeout: float = 60,
) -> Iterator[LocalCluster]:
    """A Redis Cluster of `masters` primaries with `replicas` replicas each, as redis-server
    processes on free ports of 127.0.0.1 in a temporary folder, created with
    `redis-cli --cluster create`; yield it once every node says the cluster is ok.

    A short node timeout (1 s) makes a failover take a few seconds; replicas are always
    eligible for a failover (cluster-replica-validity-factor 0).
    """
    binaries = [shutil.which("redis-server"), shutil.which("redis-cli")]
    if None in binaries:
        raise RedisUnavailable(
            "a local Redis Cluster needs redis-server and redis-cli on PATH; install them "
            "(apt-get install redis-server)"
        )
    base = Path(tempfile.mkdtemp(prefix="ticker-cluster-"))
    cluster = LocalCluster([], base, node_timeout_ms)
    try:
        taken: set[int] = set()
        for i in range(masters * (1 + replicas)):
            cluster.nodes.append(
                _start_node(
                    str(binaries[0]),
                    base / f"node-{i}",
                    node_timeout_ms,
                    appendonly,
                    taken,
                    timeout,
                )
            )
        created = subprocess.run(
            [
                str(binaries[1]),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            tail = " / ".join((created.stdout + created.stderr).strip().splitlines()[-3:])
            raise RedisUnavailable(f"redis-cli --cluster create failed: {tail}")
        cluster.history.append("create")
        cluster.wait_ok(timeout)
        cluster.url = f"redis+cluster://127.0.0.1:{cluster.masters()[0]}"
        yield cluster
    finally:
        cluster.stop()


def _start_node(
    binary: str,
    folder: Path,
    node_timeout_ms: int,
    appendonly: bool,
    taken: set[int],
    timeout: float,
) -> LocalNode:
    folder.mkdir()
    for _attempt in range(5):  # a free port may be taken before redis-server binds it
        port, bus = _free_ports(2, taken)
        args = [
            binary,
            "--port", str(port),
            "--cluster-port", str(bus),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0",
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
            "--logfile", "redis.log",
        ]  # fmt: skip
        node = LocalNode(port, bus, folder, args, _spawn(args, folder))
        try:
            _wait_port(node, timeout)
        except RedisUnavailable:
            if node.alive:
                node.process.kill()
            node.process.wait()
            continue
        return node
    raise RedisUnavailable(f"could not start a cluster node in {folder} (see redis.log)")


def _spawn(args: list[str], folder: Path) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_port(node: LocalNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(node.port):
        if not node.alive or time.monotonic() > deadline:
            raise RedisUnavailable(f"redis-server failed to start on {node.port}")
        time.sleep(0.02)


def _free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken:
            taken.add(port)
            ports.append(port)
    return ports


def _admin(port: int, *command: str) -> bytes:
    """One command to one node, on a short-lived connection."""
    with redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2) as r:
        reply: bytes = r.execute_command(*command)
        if isinstance(reply, dict):  # INFO is parsed by redis-py; CLUSTER * are bytes
            return "\n".join(f"{k}:{v}" for k, v in reply.items()).encode()
        return reply


def _fields(info: str, name: str) -> str:
    return next((line for line in info.splitlines() if line.startswith(name)), info[:60])


def _parse_cluster_nodes(raw: bytes) -> list[dict[str, Any]]:
    nodes = []
    for line in raw.decode().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            {
                "id": parts[0],
                "port": int(address.rpartition(":")[2] or 0),
                "flags": set(parts[2].split(",")),
                "master_id": None if parts[3] == "-" else parts[3],
                "connected": parts[7] == "connected",
                "slots": slots,
            }
        )
    return nodes


def _owner(view: list[dict[str, Any]], slot: int) -> int:
    for node in view:
        if any(first <= slot <= last for first, last in node["slots"]):
            port: int = node["port"]
            return port
    raise RedisUnavailable(f"slot {slot} is not served by any node")
