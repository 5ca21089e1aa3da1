"""Connecting to Redis (one server or a Redis Cluster) with clear errors; an embedded
redis-server for one person, and a local Redis Cluster for tests and benchmarks.

URLs: `redis://host:port/db`, `rediss://…` (TLS), `unix:///path.sock` for one server;
`redis+cluster://host:port` (or `rediss+cluster://…`) for a cluster, where several seed
nodes may be listed, `redis+cluster://h1:7000,h2:7000`, so that a client can start while
one of them is down. A cluster has only database 0.
"""

import asyncio
import contextlib
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
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
from ticker.procs import terminate

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


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def masked(url: str) -> str:
    """`url` with its password shown as ****, for messages and logs:
    `redis://:****@host:6379/0`, `redis://user:****@host`, `...?password=****`."""
    scheme, sep, rest = url.partition("://")
    before_query, query_mark, query = rest.partition("?")
    # The last @ before the query ends the credentials, even if the password holds a /.
    userinfo, at, hosts = before_query.rpartition("@")
    if sep and at and ":" in userinfo:
        url = f"{scheme}://{userinfo.partition(':')[0]}:****@{hosts}{query_mark}{query}"
    return _QUERY_PASSWORD.sub(r"\1****", url)


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
        raise UsageError(f"invalid Redis URL {masked(url)!r}: {reason}; use {URL_FORMS}")
    try:
        return aioredis.Redis.from_url(url, socket_connect_timeout=3, health_check_interval=15)
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL {masked(url)!r}: {exc}; use {URL_FORMS}") from None


def _cluster_client(url: str) -> RedisCluster:
    def invalid(reason: str) -> UsageError:
        return UsageError(
            f"invalid Redis Cluster URL {masked(url)!r}: {reason}; use "
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
            f"cannot reach Redis{' Cluster' if is_cluster(url) else ''} at {masked(url)} "
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


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on, for a process that binds it next.

    Chosen at random below the kernel's ephemeral range: a port the kernel hands out (bind
    to 0) is also what it gives the next outgoing connection as its source port, so under
    parallel tests another process's client could take it before our server binds it.
    """
    high = _ephemeral_low()
    low = max(1024, high - 12_000)
    for _ in range(100 if low < high else 0):
        port = random.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the range is crowded: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@contextlib.contextmanager
def embedded_redis(appendonly: bool = False, data_dir: Path | None = None) -> Iterator[str]:
    """Run a private redis-server on a free port of 127.0.0.1; yield its URL.

    With `data_dir`, it keeps its data there as an append-only file (appendonly yes,
    appendfsync everysec: at most a second of writes lost if the machine stops) and loads
    it again on the next start; otherwise it uses a temporary folder.

    Uses the `redis-server` binary on PATH (Debian's redis-server package, which this
    machine kind has; `apt-get install redis-server` elsewhere).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            "no Redis configured and no redis-server on PATH; install it "
            "(apt-get install redis-server) or set REDIS_URL"
        )
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ticker-redis-")))
        else:
            folder = data_dir
            folder.mkdir(parents=True, exist_ok=True)
            appendonly = True
        port = free_port()
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "everysec",
            "--logfile",
            str(folder / "redis.log"),
        ]
        # Its own session: a Ctrl-C meant for our process group must not stop Redis
        # before the processes that use it (we terminate it last).
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            # Loading a large append-only file takes a while (Redis answers LOADING).
            if not answers_soon(port, proc, 10 if data_dir is None else 300):
                raise RedisUnavailable(
                    f"embedded redis-server failed to start on {port}; see {folder / 'redis.log'}"
                )
            yield url
        finally:
            terminate(proc, timeout=5)


def answers_soon(port: int, proc: "subprocess.Popen[Any]", timeout: float) -> bool:
    """Wait until the Redis that `proc` started on this local port answers PING (not still
    loading its data); False if `proc` exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not _answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _answers(port: int) -> bool:
    """Whether the Redis on this local port answers PING (not still loading its data)."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) != 0:
            return False
    r = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(r.ping())
    except RedisError:
        return False
    finally:
        r.close()
