"""A sharded replay on a real Redis Cluster ends exactly where a single stream does, through
aggregator crashes and a primary's failover."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.conftest import UNIT, Ticker, serving, stop, wait_http
from tests.test_compose import CLUSTER, ticker_command, ticker_services
from ticker.bench.common import expected_totals
from ticker.core.aggregate import State
from ticker.keys import Keys
from ticker.redis_io import free_port
from ticker.testing import LocalCluster

# Two hours of the day at 1/1000: the first five GMV milestones, ~3,000 batches (small
# ones: coalesced batches would make the run too short for both aggregators to share it).
WINDOW = ("--scale", "0.001", "--to", "02:00", "--batch-size", "250")
SHARDS = "4"


@pytest.fixture(scope="module")
def reference(redis_url: str) -> State:
    """The same replay on one stream of a single Redis: what every sharded run must equal."""
    t = Ticker(redis_url, f"ref{os.getpid()}")
    try:
        t.miniature_day("--to", "02:00", "--seed", "7")
        return _state(redis.Redis.from_url(redis_url), Keys(t.namespace))
    finally:
        t.close()


@pytest.fixture
def on_cluster(redis_cluster: LocalCluster, namespace: str) -> Iterator[Ticker]:
    t = Ticker(redis_cluster.seeds_url, namespace)  # every node a seed: any may be killed
    yield t
    t.close()


def _state(r: Any, keys: Keys) -> State:
    raw, brands = r.hmget(keys.state, ["state", "brands"])
    assert raw, "no state committed"
    return State.loads(raw, brands)


def _cluster_client(cluster: LocalCluster) -> RedisCluster:
    """A client seeded with every live node (a test may have killed the first one)."""
    nodes = [ClusterNode("127.0.0.1", n.port) for n in cluster.nodes if n.alive]
    return RedisCluster(startup_nodes=nodes)


def _assert_same(state: State, reference: State) -> None:
    assert state.ended
    assert (state.gmv_fen, state.orders) == (reference.gmv_fen, reference.orders)
    for name in ("cat_gmv", "cat_orders", "cty_gmv", "reg_gmv", "reg_orders", "brand_gmv"):
        assert np.array_equal(getattr(state, name), getattr(reference, name)), name
    fired = [(f.milestone.id, f.sim_time_ms) for f in state.fired]
    assert fired == [(f.milestone.id, f.sim_time_ms) for f in reference.fired]
    assert len(fired) == 5
    assert state.gaps == 0
    assert state.curve() == reference.curve()  # every minute of the day's chart, exact


def _until_under_way(cluster: LocalCluster, keys: Keys) -> None:
    """Wait until shard 0 has a consumer and the merged state a first commit: mid-replay
    (the paced replay runs for 12 s), however slowly the processes started."""
    r = _cluster_client(cluster)
    deadline = time.monotonic() + 60 * UNIT
    while not (r.get(keys.shard(0).lease) and r.hget(keys.state, "state")):
        assert time.monotonic() < deadline, "the sharded replay did not get under way"
        time.sleep(0.05)


def _replay_and_aggregate(
    t: Ticker, speed: str, during: "Callable[[list[subprocess.Popen[str]]], None] | None" = None
) -> list[subprocess.Popen[str]]:
    """Replay WINDOW over the shards with two aggregator processes (A, B) to the end;
    `during` runs while they do."""
    aggs = [t.start("aggregate", "--shards", SHARDS, "--burst", "--name", n) for n in "AB"]
    replay = t.start(
        "replay", *WINDOW, "--seed", "7", "--speed", speed, "--quiet", "--shards", SHARDS
    )
    procs = (replay, *aggs)

    def logs() -> str:
        return "\n-----\n".join(t.output(p)[-6000:] for p in procs)

    try:
        if during:
            during(aggs)
        try:
            assert replay.wait(180 * UNIT) == 0, logs()
            for agg in aggs:
                if agg.poll() is None or agg.returncode == 0:  # not the one a test killed
                    assert agg.wait(120 * UNIT) == 0, logs()
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{exc}; the processes said:\n{logs()}") from None
    finally:
        for proc in procs:
            stop(proc)
    if os.environ.get("SHOW_LOGS"):
        print(logs())
    return aggs


def test_a_sharded_day_on_the_cluster_is_exact(
    on_cluster: Ticker, redis_cluster: LocalCluster, reference: State
) -> None:
    """4 shards over 3 primaries, 2 aggregator processes: the same totals, tallies and
    milestones (at the same orders' times) as one stream; the shards were shared, and a
    server on the cluster serves the merged feed."""
    with serving(on_cluster) as server:
        # Paced (6 s): at max speed the coalesced window can end before the second
        # aggregator takes its share.
        aggs = _replay_and_aggregate(on_cluster, "1200")
        r = _cluster_client(redis_cluster)
        keys = Keys(on_cluster.namespace)
        _assert_same(_state(r, keys), reference)
        assert json.loads(r.get(keys.curve) or b"[]") == reference.curve()
        deadline = time.monotonic() + 10 * UNIT
        while True:  # the server tails the feed: its last entry is the merged end
            with urllib.request.urlopen(server.url + "api/state", timeout=5) as resp:
                served = json.loads(resp.read())
            if served["ended"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert (served["gmv_fen"], served["orders"]) == (reference.gmv_fen, reference.orders)
    assert [m["id"] for m in served["milestones"]] == [f.milestone.id for f in reference.fired]
    assert served["sample_orders"]  # the map's arcs: the newest cross-border orders
    masters = {redis_cluster.master_for_key(keys.shard(i).orders) for i in range(4)}
    assert len(masters) >= 2  # the hash tags spread the shards over the cluster
    verify = on_cluster.run("verify")  # regenerates the run, compares every tally
    assert verify.returncode == 0, verify.stdout + verify.stderr
    logs = [on_cluster.output(a) for a in aggs]
    assert all("commits" in log for log in logs), logs  # both aggregated a share


def test_killing_an_aggregator_mid_replay_leaves_it_exact(
    on_cluster: Ticker, redis_cluster: LocalCluster, reference: State
) -> None:
    """kill -9 one of two aggregators (it may hold the merge step too): the other takes
    its shards over after the leases expire, and the day still ends exact."""

    keys = Keys(on_cluster.namespace)
    victim: list[int] = []

    def kill_one(aggs: list[subprocess.Popen[str]]) -> None:
        _until_under_way(redis_cluster, keys)
        holder = _cluster_client(redis_cluster).get(keys.shard(0).lease)
        victim.append(0 if holder == b"A/0" else 1)  # the one consuming shard 0
        aggs[victim[0]].send_signal(signal.SIGKILL)

    aggs = _replay_and_aggregate(on_cluster, "600", kill_one)
    assert aggs[victim[0]].returncode == -signal.SIGKILL
    survivor = on_cluster.output(aggs[1 - victim[0]])
    assert f"consuming {keys.shard(0).orders}" in survivor, survivor  # took it over
    _assert_same(_state(_cluster_client(redis_cluster), Keys(on_cluster.namespace)), reference)


@pytest.mark.parametrize("whose", ["shard", "merge"])
def test_killing_a_primary_mid_replay_leaves_it_exact(
    on_cluster: Ticker, redis_cluster: LocalCluster, reference: State, whose: str
) -> None:
    """SIGKILL the primary holding shard 0's stream (or the merge step's state): its
    replica is promoted, writes it never got are found missing and written again, and
    the day still ends exact."""
    keys = Keys(on_cluster.namespace)
    key = keys.shard(0).orders if whose == "shard" else keys.state
    took: list[float] = []

    def kill_primary(aggs: list[subprocess.Popen[str]]) -> None:
        _until_under_way(redis_cluster, keys)
        took.append(redis_cluster.kill_master_for_key(key))

    killed = redis_cluster.master_for_key(key)
    try:
        _replay_and_aggregate(on_cluster, "600", kill_primary)
        assert took and redis_cluster.master_for_key(key) != killed
        _assert_same(_state(_cluster_client(redis_cluster), keys), reference)
    finally:
        redis_cluster.restart(killed)  # back as a replica, for the next test


def test_the_compose_cluster_profile_runs_as_processes(
    on_cluster: Ticker, redis_cluster: LocalCluster
) -> None:
    """docker-compose.yml's cluster services, their commands run here as processes against
    the local cluster (the replay at max speed over half an hour of a 1/1000 day instead
    of 1x over the whole one, the servers on free ports): exact, and both servers serve it."""
    commands = {n: ticker_command(n) for n in CLUSTER if n in ticker_services()}
    servers, procs = [], []
    try:
        for args in commands.values():
            if "--metrics-port" in args:  # each container has its own; processes share a host
                args[args.index("--metrics-port") + 1] = str(free_port())
                args[args.index("--metrics-host") + 1] = "127.0.0.1"
            if args[0] == "serve":
                port = free_port()
                args = [*args, "--host", "127.0.0.1", "--port", str(port)]
                servers.append(f"http://127.0.0.1:{port}/")
            if args[0] != "replay":
                procs.append(on_cluster.start(*args))
        replay = next(a for a in commands.values() if a[0] == "replay")
        replay[replay.index("--speed") + 1] = "max"
        done = on_cluster.run(*replay, "--scale", "0.001", "--to", "00:30", "--quiet", timeout=120)
        assert done.returncode == 0, done.stderr
        gmv, orders, _ = expected_totals(Fraction(1, 1000), 0, 1_800_000, 0, 4000)
        for url in servers:
            deadline = time.monotonic() + 60 * UNIT
            while True:
                wait_http(url + "healthz")
                with urllib.request.urlopen(url + "api/state", timeout=5) as resp:
                    served = json.loads(resp.read())
                if served["ended"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert (served["gmv_fen"], served["orders"]) == (gmv, orders), url
    finally:
        for proc in procs:
            stop(proc)
