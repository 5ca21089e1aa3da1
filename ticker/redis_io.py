"""Connecting to Redis with clear errors, and an embedded redis-server for one person."""

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ticker.errors import RedisUnavailable, UsageError

# Errors after which a process waits and reconnects instead of failing.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def client(url: str) -> "aioredis.Redis":
    """A client that answers bytes; the orders' columns are binary."""
    try:
        return aioredis.Redis.from_url(url, socket_connect_timeout=3, health_check_interval=15)
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL {url!r}: {exc}; use redis://host:port/db") from None


async def connect(url: str) -> "aioredis.Redis":
    """Connect and ping, or raise RedisUnavailable with a one-line reason and remedy."""
    r = client(url)
    try:
        await r.ping()
    except (RedisError, OSError) as exc:
        await r.aclose()
        raise RedisUnavailable(
            f"cannot reach Redis at {url} ({exc.__class__.__name__}: {exc}); start redis-server "
            "or point --redis-url / REDIS_URL at a running one"
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
