"""Rigs for the tests and the benchmarks (the ticker itself uses none of this).

A local Redis Cluster of redis-server processes on free ports of 127.0.0.1: 3 primaries
with a replica each by default, started with short node timeouts so that a killed
primary's replica takes over in about 2.5 s. Uses the `redis-server` and `redis-cli`
binaries on PATH (Debian's redis-server package). And the replication helpers that check
where a write has reached (`primaries_with_replicas`, `wait_for_replicas`).
"""

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from ticker.errors import RedisUnavailable
from ticker.procs import terminate
from ticker.redis_io import Client, answers_soon, free_port


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
        terminate(*(node.process for node in self.nodes), timeout=5)
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
    if not answers_soon(node.port, node.process, timeout):
        raise RedisUnavailable(f"redis-server failed to start on {node.port}")


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
