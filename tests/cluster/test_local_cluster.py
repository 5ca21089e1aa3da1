"""The ticker's Redis client on a real Redis Cluster: slots on every primary, scripts and
streams within one hash tag, and a primary killed under a working client."""

import asyncio
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from ticker.errors import RedisUnavailable, UsageError
from ticker.redis_io import TRANSIENT, client, connect, is_cluster, reachable
from ticker.testing import LocalCluster, primaries_with_replicas, wait_for_replicas

T = TypeVar("T")


def tags_on_every_primary(cluster: LocalCluster, prefix: str) -> dict[int, str]:
    """One key per primary, each with its own hash tag."""
    found: dict[int, str] = {}
    for i in range(1000):
        key = f"ticker:{{{prefix}-{i}}}:x"
        found.setdefault(cluster.master_for_key(key), key)
        if len(found) == len(cluster.masters()):
            return found
    raise AssertionError("no hash tag found for some primary")


async def retrying(call: Callable[[], Awaitable[T]], timeout: float = 20) -> T:
    """What a ticker process does: wait and retry on a transient error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_urls_say_which_kind_of_redis() -> None:
    assert is_cluster("redis+cluster://127.0.0.1:7000")
    assert is_cluster("rediss+cluster://node-1:7000,node-2:7000/0")
    assert not is_cluster("redis://127.0.0.1:6379/0")
    assert not is_cluster("unix:///run/redis.sock")
    assert isinstance(client("redis+cluster://h1:7000,h2:7001"), RedisCluster)
    for bad, says in [
        ("redis+cluster://h:7000/2", "only database 0"),
        ("redis+cluster://", "no host"),
        ("redis+cluster://h:port", "Port could not be cast"),
        ("http://h:80", "unknown scheme 'http'"),
        ("127.0.0.1:6379", "no scheme"),
    ]:
        with pytest.raises(UsageError, match=re.escape(says)):
            client(bad)


async def test_unreachable_cluster_is_one_line_with_the_remedy() -> None:
    url = "redis+cluster://127.0.0.1:1"
    with pytest.raises(RedisUnavailable) as caught:
        await connect(url)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach Redis Cluster at {url}")
    assert "redis-cli --cluster create" in message
    assert not await asyncio.to_thread(reachable, url)


async def test_a_plain_redis_is_not_a_cluster(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis+cluster://")
    with pytest.raises(RedisUnavailable, match="Cluster mode is not enabled"):
        await connect(url)


async def test_a_plain_redis_is_one_primary(redis_url: str) -> None:
    r = await connect(redis_url)
    try:
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        assert await primaries_with_replicas(r) == {f"127.0.0.1:{port}": []}
    finally:
        await r.aclose()


async def test_keys_land_on_every_primary(redis_cluster: LocalCluster) -> None:
    r = await connect(redis_cluster.url)
    try:
        assert isinstance(r, RedisCluster)
        keys = tags_on_every_primary(redis_cluster, uuid.uuid4().hex)
        assert len(keys) == 3
        for port, key in keys.items():
            await r.set(key, str(port))
        for port, key in keys.items():
            assert await r.get(key) == str(port).encode()  # bytes replies
            assert r.get_node_from_key(key).port == port
        shape = await primaries_with_replicas(r)
        assert sorted(int(a.rpartition(":")[2]) for a in shape) == sorted(redis_cluster.masters())
        assert all(len(replicas) == 1 for replicas in shape.values())
    finally:
        await r.aclose()


async def test_a_script_runs_within_one_hash_tag(redis_cluster: LocalCluster) -> None:
    r = client(redis_cluster.url)
    tag = uuid.uuid4().hex
    add = r.register_script(
        "redis.call('HINCRBY', KEYS[1], 'n', ARGV[1]) "
        "return redis.call('XADD', KEYS[2], '*', 'n', ARGV[1])"
    )
    try:
        keys = [f"ticker:{{{tag}}}:state", f"ticker:{{{tag}}}:feed"]
        for n in (1, 2, 3):
            await add(keys=keys, args=[n])
        assert await r.hget(keys[0], "n") == b"6"
        assert await r.xlen(keys[1]) == 3
        elsewhere = f"ticker:{{{tag}-other}}:feed"
        with pytest.raises(RedisClusterException):  # keys of two slots: refused client-side
            await add(keys=[keys[0], elsewhere], args=[1])
    finally:
        await r.aclose()


async def test_a_consumer_group_reads_a_stream(redis_cluster: LocalCluster) -> None:
    r = client(redis_cluster.url)
    stream = f"ticker:{{{uuid.uuid4().hex}}}:orders"
    try:
        await r.xgroup_create(stream, "aggregators", id="0", mkstream=True)
        ids = [await r.xadd(stream, {"b": bytes([i, 0, 255])}) for i in range(5)]
        got = await r.xreadgroup("aggregators", "a-1", {stream: ">"}, count=10, block=1000)
        assert [entry[0] for entry in got[0][1]] == ids
        assert got[0][1][0][1] == {b"b": bytes([0, 0, 255])}
        assert await r.xack(stream, "aggregators", *ids[:3]) == 3
        assert (await r.xpending(stream, "aggregators"))["pending"] == 2
        started = time.monotonic()
        assert await r.xreadgroup("aggregators", "a-1", {stream: ">"}, block=300) == []
        assert time.monotonic() - started >= 0.25  # blocked, within the socket timeout
    finally:
        await r.aclose()


async def test_the_client_survives_a_primary_killed(redis_cluster: LocalCluster) -> None:
    """Data acknowledged by a replica (WAIT 1) outlives its primary; the same client
    object carries on once a replica took over, with the retries a ticker process makes."""
    r = client(redis_cluster.url)
    tag = uuid.uuid4().hex
    key, stream = f"ticker:{{{tag}}}:state", f"ticker:{{{tag}}}:orders"
    count = r.register_script("return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])")
    old = redis_cluster.master_for_key(key)
    try:
        await r.hset(key, mapping={"commit": 7, "state": b"\x00\x01"})
        await r.xgroup_create(stream, "aggregators", id="0", mkstream=True)
        ids = [await r.xadd(stream, {"i": str(i)}) for i in range(3)]
        await r.xreadgroup("aggregators", "a-1", {stream: ">"}, count=2)  # 2 pending
        assert await count(keys=[key], args=[5]) == 5
        assert await wait_for_replicas(r, key, 1, 2000) == 1

        stopping, writes = asyncio.Event(), [0]

        async def writer() -> None:  # keeps writing to the dying primary's slot throughout
            while not stopping.is_set():
                await retrying(lambda: r.incr(f"ticker:{{{tag}}}:n"))
                writes[0] += 1

        writing = asyncio.create_task(writer())
        await asyncio.sleep(0.1)
        took = await asyncio.to_thread(redis_cluster.kill_master_for_key, key)
        assert took < 15
        new = redis_cluster.master_for_key(key)
        assert new != old
        before = writes[0]
        await asyncio.sleep(0.3)
        stopping.set()
        await writing
        assert writes[0] > before  # the writer got through the failover on its own

        assert await retrying(lambda: r.hget(key, "commit")) == b"7"
        assert await r.hget(key, "state") == b"\x00\x01"
        assert await count(keys=[key], args=[1]) == 6  # the script is loaded again (NOSCRIPT)
        pending = await r.xpending(stream, "aggregators")
        assert (pending["pending"], pending["min"], pending["max"]) == (2, ids[0], ids[1])
        claimed = await r.xautoclaim(stream, "aggregators", "a-2", 0, "0-0")
        assert [entry[0] for entry in claimed[1]] == ids[:2]
        assert r.get_node_from_key(key).port == new
    finally:
        await r.aclose()
        await asyncio.to_thread(redis_cluster.restart, old)
    deadline = time.monotonic() + 30
    while old not in redis_cluster.replicas_of(new) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the restarted node learns its new role by gossip
    assert old in redis_cluster.replicas_of(new)  # back, as the new primary's replica


async def test_wait_goes_to_the_primary_of_the_key(redis_cluster: LocalCluster) -> None:
    """A plain WAIT lands on redis-py's default node; wait_for_replicas asks the key's
    primary, so it reports a replica that has not got the write (here: stopped)."""
    r = client(redis_cluster.url)
    key = f"ticker:{{{uuid.uuid4().hex}}}:state"
    replica = redis_cluster.node(redis_cluster.replicas_of(redis_cluster.master_for_key(key))[0])
    try:
        await r.set(key, b"1")
        assert await wait_for_replicas(r, key, 1, 2000) == 1
        replica.process.send_signal(signal.SIGSTOP)
        try:
            await r.set(key, b"2")
            assert await wait_for_replicas(r, key, 1, 200) == 0
        finally:
            replica.process.send_signal(signal.SIGCONT)
        assert await wait_for_replicas(r, key, 1, 2000) == 1
    finally:
        await r.aclose()


async def test_a_cluster_url_with_a_dead_seed_still_connects(
    redis_cluster: LocalCluster,
) -> None:
    dead = "127.0.0.1:1"
    r = await connect(redis_cluster.url.replace("//", f"//{dead},", 1))
    try:
        await r.set(f"ticker:{{{uuid.uuid4().hex}}}:x", b"1")
    finally:
        await r.aclose()


async def test_a_script_error_is_not_transient(redis_cluster: LocalCluster) -> None:
    r = client(redis_cluster.url)
    try:
        with pytest.raises(ResponseError) as caught:
            await r.eval("return redis.error_reply('FENCED 3')", 1, "ticker:{x}:state")
        assert not isinstance(caught.value, TRANSIENT)
    finally:
        await r.aclose()
