"""The merge step's I/O shell: read the shards' rows and parts, commit the global state.

One merge step runs at a time (a lease, like an aggregator's); every aggregator process of
a sharded run offers to run it. Each round reads the rows the shards committed since the
last round and the parts whose commit number moved, merges them (`ticker.core.merge`),
and commits the merged state, its own bookkeeping and one feed entry in one script on the
namespace's slot, fenced by a commit number, as an aggregator does.

The shards drop what a commit no longer needs only once every replica of the namespace's
primary has that commit: after a failover of that primary, a commit it had not passed on
is lost and the step resumes from an older one, and what it reads again must still be
there.
"""

import asyncio
import logging
import time
from collections import deque

import orjson
from redis.asyncio.cluster import RedisCluster

from ticker.commit import feed_payload, run_fenced
from ticker.core.aggregate import Fired, State
from ticker.core.batch import BadEntry, Orders, decode
from ticker.core.merge import Merge, Row
from ticker.errors import FencedOff
from ticker.keys import FEED_MAXLEN, Keys
from ticker.lease import LEASE_MS, Lease, fence
from ticker.redis_io import client
from ticker.reseed import new_epoch, reseed

log = logging.getLogger("ticker.merge")

MERGE_INTERVAL = 0.1  # at most this many feed entries a second, like a lone aggregator
READ_ROWS = 1_000

# KEYS: state, feed, epoch, lease, curve
# ARGV: expected commit, holder, lease ms, state blob, brands blob, merge blob,
#       feed maxlen, feed payload, new epoch, the full curve as JSON
COMMIT = (
    fence("KEYS[4]", "ARGV[2]", "KEYS[1]", "ARGV[1]", "ARGV[3]")
    + """
redis.call('HSET', KEYS[1], 'commit', commit + 1, 'state', ARGV[4], 'brands', ARGV[5],
           'merge', ARGV[6])
redis.call('SET', KEYS[3], ARGV[9], 'NX')
redis.call('SET', KEYS[5], ARGV[10])
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'u', ARGV[8])
"""
)


class Merger:
    """Merges the shards of one namespace into its state and feed until stopped."""

    def __init__(self, redis_url: str, keys: Keys, shards: int, name: str) -> None:
        self.keys, self.shards = keys, [keys.shard(i) for i in range(shards)]
        self.redis = client(redis_url)
        self.lease = Lease(self.redis, keys.lease, f"{name}/merge")
        self._commit = self.redis.register_script(COMMIT)
        self.stopping = asyncio.Event()
        self.epoch = new_epoch()
        self.merge = Merge()
        self.commit_no = 0
        self.parts: dict[int, tuple[int, State]] = {}  # shard -> (its commit, its part)
        # (replication offset of a commit, its cursors, its floors), oldest first
        self.trims: deque[tuple[int, dict[int, str], dict[int, str]]] = deque()
        self.waiting = False  # for a batch to read back (see round)

    async def load(self) -> None:
        raw = await self.redis.hmget(self.keys.state, ["commit", "state", "brands", "merge"])
        self.parts = {}
        if raw[3] is None:
            self.epoch = new_epoch()  # a new feed, or one Redis lost: never an old epoch
        if raw[3] is None and self.commit_no > 0:
            # Redis lost its data while we hold a merged commit: put it back (see
            # `ticker.reseed`). The shards' aggregators restore their parts the same way.
            state = self.merge.state
            await reseed(
                self.redis,
                self.keys,
                self.keys.feed,
                self.lease.holder,
                LEASE_MS,
                self.commit_no,
                (
                    state.dumps(),
                    state.brand_blob(),
                    orjson.dumps(state.curve()),
                    feed_payload(state, []),
                    self.merge.dumps(),
                ),
                FEED_MAXLEN,
                self.epoch,
            )
            return
        self.commit_no = int(raw[0] or 0)
        self.merge = Merge.loads(raw[3], State.loads(raw[1], raw[2])) if raw[3] else Merge()

    async def run(self) -> None:
        if not await self.lease.acquire(self.stopping):
            return
        await self.load()
        log.info("merging %d shards from commit %d", len(self.shards), self.commit_no)
        while not self.stopping.is_set():
            await self.lease.renew()
            began = time.monotonic()
            try:
                await self.round()
            except FencedOff:
                if not await self.lease.held():
                    raise
                log.warning("a merge commit or its reply was lost; reloading the merged state")
                await self.load()
            await self._trim()  # also when idle: the shards may be waiting for it
            await asyncio.sleep(max(0.0, MERGE_INTERVAL - (time.monotonic() - began)))

    async def round(self) -> bool:
        """Merge what changed since the last round; False when nothing did."""
        rows = await asyncio.gather(*(self._read_rows(i) for i in range(len(self.shards))))
        moved = await self._refresh_parts()
        if not moved and not any(rows) and not self.waiting:
            return False
        for shard_rows in rows:
            self.merge.take(shard_rows)
        self.merge.absorb([part for _, part in self.parts.values()])
        fired: list[Fired] = []
        fetched: dict[str, Orders] = {}
        self.waiting = False
        while True:
            new, need = self.merge.advance(fetched)
            fired += new
            if need is None:
                break
            batch = await self._read_batch(need.row)
            if batch is None:
                self.waiting = True  # not readable now (a failover?): try again next round
                break
            fetched[need.row.entry_id] = batch
        await self._commit_round(fired)
        for f in fired:
            log.info("milestone %s", f)
        return True

    async def _read_rows(self, shard: int) -> list[Row]:
        cursor = self.merge.cursors.get(shard)
        page = await self.redis.xrange(
            self.shards[shard].partials, min=f"({cursor}" if cursor else "-", count=READ_ROWS
        )
        rows = [Row(*row) for _, fields in page for row in orjson.loads(fields[b"u"])]
        if page:
            self.merge.cursors[shard] = page[-1][0].decode()
        return rows

    async def _refresh_parts(self) -> bool:
        """Reload the parts whose commit moved; True if any did."""
        commits = await asyncio.gather(*(self.redis.hget(k.state, "commit") for k in self.shards))
        moved = [i for i, c in enumerate(commits) if c and self.parts.get(i, (-1,))[0] != int(c)]
        for i in moved:
            commit, raw, brands = await self.redis.hmget(
                self.shards[i].state, ["commit", "state", "brands"]
            )
            self.parts[i] = (int(commit), State.loads(raw, brands))
        return bool(moved)

    async def _read_batch(self, row: Row) -> Orders | None:
        page = await self.redis.xrange(
            self.shards[row.shard].orders, min=row.entry_id, max=row.entry_id
        )
        try:
            batch = decode(page[0][1]) if page else None
        except BadEntry:
            batch = None
        if not isinstance(batch, Orders) or batch.seq != row.seq:
            log.warning("batch %s of shard %d is not readable yet", row.entry_id, row.shard)
            return None
        return batch

    async def _commit_round(self, fired: list[Fired]) -> None:
        state = self.merge.state
        await run_fenced(
            self._commit,
            [
                self.keys.state,
                self.keys.feed,
                self.keys.epoch,
                self.keys.lease,
                self.keys.curve,
            ],
            [
                self.commit_no,
                self.lease.holder,
                LEASE_MS,
                state.dumps(),
                state.brand_blob(),
                self.merge.dumps(),
                FEED_MAXLEN,
                feed_payload(state, fired),
                self.epoch,
                orjson.dumps(state.curve()),
            ],
            "merge step",
        )
        self.commit_no += 1
        self.lease.renewed = time.monotonic()
        offset, _ = await self._replication()
        self.trims.append((offset, dict(self.merge.cursors), dict(self.merge.floors)))

    async def _replication(self) -> tuple[int, int | None]:
        """The replication offset of the merged state's primary, and the lowest offset its
        replicas have acknowledged (None when it has none)."""
        if isinstance(self.redis, RedisCluster):
            node = self.redis.get_node_from_key(self.keys.state)
            info = await self.redis.execute_command("INFO", "replication", target_nodes=node)
        else:
            info = await self.redis.info("replication")
        acked = [
            int(v["offset"])
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and "offset" in v
        ]
        return int(info["master_repl_offset"]), (min(acked) if acked else None)

    async def _trim(self) -> None:
        """Let the shards drop what the newest commit the replicas have no longer needs."""
        if not self.trims:
            return
        _, acked = await self._replication()
        due = None
        while self.trims and (acked is None or self.trims[0][0] <= acked):
            due = self.trims.popleft()
        if due is None:
            return
        _, cursors, floors = due
        for shard, cursor in cursors.items():
            await self.redis.xtrim(self.shards[shard].partials, minid=cursor)
        for shard, floor in floors.items():
            # Every batch before the floor was committed (acknowledged) by its shard, so
            # trimming here is safe; the shard's own commits trim no further than it.
            await self.redis.set(self.shards[shard].merged, floor)
            await self.redis.xtrim(self.shards[shard].orders, minid=floor)
