"""The aggregator's I/O shell: consume order batches, commit state atomically, feed updates.

Each round reads up to `count` entries through the consumer group, folds them into the
state (the pure core), and commits in one Lua script: the state and its commit number, the
XACK of those entries, the dead letters and one feed entry. A crash before the commit
loses nothing (the entries are still pending and are read again, `0` before `>`); a crash
after it repeats nothing. A stale aggregator (one that another has committed past) is
fenced off by the commit number, and the lease (a token unique to the process) makes one
aggregator active at a time whatever the names.

Within a run nothing is applied ahead of a missing seq: such an entry is held, still
pending, until the gap fills, and dead-lettered after a bounded wait (`ticker.core.hold`).
A Redis that came back empty gets the committed state back from memory under a new epoch
(`ticker.reseed`).

On a sharded run (`--shards N`) an aggregator consumes one shard's stream: its state is
that shard's part, and instead of a feed entry each commit writes the rows it applied to
the shard's partials stream for the merge step (`ticker.merge`), which also holds back the
trimming of batches it has not taken yet (the `merged` floor).
"""

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.exceptions import ResponseError

from ticker.commit import feed_payload, run_fenced
from ticker.core.aggregate import Fired, State
from ticker.core.batch import BadEntry, End, Entry, Start, decode
from ticker.core.hold import HOLD_SECONDS, Held, Hold, seq_key
from ticker.core.rounds import COMMIT_ROUND, READ_COUNT, READ_NOW, Rounds
from ticker.errors import FencedOff, TickerError
from ticker.keys import DEAD_LETTERS_MAXLEN, FEED_MAXLEN, GROUP, PARTIALS_MAXLEN, Keys
from ticker.lease import LEASE_MS, Lease, fence
from ticker.redis_io import client
from ticker.reseed import LiveRun, new_epoch, reseed

log = logging.getLogger("ticker.aggregate")


# KEYS: state, orders, feed (a shard's partials), dead letters, epoch, lease, merged floor,
#       curve
# ARGV: expected commit, state blob, group, feed maxlen, feed payload, new epoch,
#       lease token, lease ms, brand tally blob, the full curve as JSON ('' on a shard:
#       the merge step writes it), dead letters maxlen, number of dead letters D, then D
#       triples (original id, reason, raw fields as JSON), then the ids to acknowledge.
COMMIT = (
    fence("KEYS[6]", "ARGV[7]", "KEYS[1]", "ARGV[1]", "ARGV[8]")
    + """
redis.call('HSET', KEYS[1], 'commit', commit + 1, 'state', ARGV[2], 'brands', ARGV[9])
redis.call('SET', KEYS[5], ARGV[6], 'NX')
if ARGV[10] ~= '' then redis.call('SET', KEYS[8], ARGV[10]) end
local dead = tonumber(ARGV[12])
local i = 13
for _ = 1, dead do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*',
             'id', ARGV[i], 'reason', ARGV[i + 1], 'entry', ARGV[i + 2])
  i = i + 3
end
if i <= #ARGV then
  redis.call('XACK', KEYS[2], ARGV[3], unpack(ARGV, i))
end
-- Trim consumed entries, but never past one some group has not acknowledged; keep the
-- last delivered entry so a restarted producer can see where its run stopped.
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local keep = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  local info = {}
  for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
  local floor = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    floor = redis.call('XPENDING', KEYS[2], info['name'])[2]
  end
  if keep == nil or older(floor, keep) then keep = floor end
end
-- A shard keeps every batch the merge step has not taken (it may read one back).
local merged = redis.call('GET', KEYS[7])
if merged and (keep == nil or older(merged, keep)) then keep = merged end
if keep ~= nil and keep ~= '0-0' then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', keep)
end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'u', ARGV[5])
"""
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A malformed entry set aside in the dead-letter stream, in the commit that acks it."""

    entry_id: str  # its id in the orders stream
    reason: str
    entry: str  # a bounded, printable copy of its fields as JSON

    def args(self) -> tuple[str, str, str]:
        """Its three arguments of the commit script, in order."""
        return self.entry_id, self.reason, self.entry


def default_name() -> str:
    """An aggregator's name when none is given: unique per process (host, pid, random)."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class RunIncomplete(TickerError):
    """The run can no longer end: its end entry came ahead of batches that never came."""


class Share(Protocol):
    """When a shard's worker may take its shard and must hand it over (what the
    aggregator needs of `ticker.sharding`, which implements it)."""

    def may_take(self) -> bool: ...

    def took(self) -> None: ...

    def should_give_up(self) -> bool: ...


@dataclass
class Stats:
    """Counters for the log line and /metrics."""

    applied_orders: int = 0
    applied_entries: int = 0
    commits: int = 0


class Aggregator:
    """Consumes the orders stream of one namespace until stopped (or drained, in burst)."""

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        consumer: str | None = None,
        burst: bool = False,
        log_every: float = 5.0,
        shards: int = 1,
        share: Share | None = None,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        """`keys` are a shard's own keys when `shards` > 1; `share` says when to take the
        shard and when to hand it to another process (see `ticker.sharding`).
        `hold_seconds`: how long an entry ahead of a missing seq is held before it is
        dead-lettered (`Settings.hold_seconds`)."""
        self.redis_url, self.keys, self.burst = redis_url, keys, burst
        self.shards, self.share = shards, share
        self.sharded = shards > 1
        # Where each commit writes, and that stream's cap: a shard's partials for the merge
        # step, or the feed.
        self.out, self.out_maxlen = (
            (keys.partials, PARTIALS_MAXLEN) if self.sharded else (keys.feed, FEED_MAXLEN)
        )
        self.consumer = consumer or default_name()
        self.log_every = log_every
        self.state = State()
        self.commit_no = 0
        self.epoch = new_epoch()
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.redis = client(redis_url)
        self._commit = self.redis.register_script(COMMIT)
        self.lease = Lease(self.redis, keys.lease, self.consumer)
        self.clock = time.monotonic  # the hold's clock (a test may pass its own)
        self.hold = Hold(hold_seconds)
        self.incomplete: str | None = None  # why the run can no longer end, once it cannot
        self.rounds = Rounds()  # when a round commits (see `ticker.core.rounds`)

    async def load(self) -> None:
        """Reload the committed state and make sure the consumer group exists."""
        self.hold = Hold(self.hold.wait_s)  # held entries are read again from the pending list
        raw = await self.redis.hmget(self.keys.state, ["commit", "state", "brands"])
        if raw[1] is None and self.commit_no > 0:
            # Redis lost its data (restarted empty) while we hold a committed state: put
            # it back, with a new epoch so that every reader sees the feed was lost.
            self.epoch = new_epoch()
            await self._reseed()
        elif raw[1] is None:
            self.epoch = new_epoch()  # a new feed: never reuse an epoch from memory
            self.commit_no, self.state = 0, State()
        else:
            self.commit_no = int(raw[0] or 0)
            self.state = State.loads(raw[1], raw[2])
        if self.sharded:
            self.state.shard = self.keys.shard_index or 0
            # Trim nothing until the merge step says what it has taken.
            await self.redis.set(self.keys.merged, "0-0", nx=True)
        try:
            await self.redis.xgroup_create(self.keys.orders, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _reseed(self) -> None:
        await reseed(
            self.redis,
            self.keys,
            self.out,
            self.lease.holder,
            LEASE_MS,
            self.commit_no,
            (
                self.state.dumps(),
                self.state.brand_blob(),
                self._curve_json(),
                b"[]" if self.sharded else self.feed_payload([]),
                b"",
            ),
            self.out_maxlen,
            self.epoch,
            LiveRun.of(self.state),
        )

    async def claim_all(self) -> int:
        """Take over every entry pending for any other consumer (a dead aggregator's).

        They are older than anything not yet delivered, so after this our own pending list
        holds, in stream order, everything read but never committed.
        """
        claimed, cursor = 0, "0-0"
        while True:
            # (justid would be lighter, but redis-py then drops the cursor from the reply)
            reply = await self.redis.xautoclaim(
                self.keys.orders,
                GROUP,
                self.consumer,
                min_idle_time=0,
                start_id=cursor,
                count=100,
            )
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            claimed += len(reply[1])
            if cursor == "0-0":
                return claimed

    async def run(self) -> None:
        """Consume until stopped; in burst mode, until the replay ended and all is applied.

        Raises RunIncomplete in burst mode when the run can no longer end (its end entry
        was given up, ahead of batches that never came)."""
        if not await self.lease.acquire(self.stopping, self.share.may_take if self.share else None):
            return
        if self.share:
            self.share.took()
            log.info("consuming %s", self.keys.orders)
        await self.load()
        claimed = await self.claim_all()
        if claimed:
            log.info("claimed %d entries read earlier but never committed", claimed)
        # First our own pending entries (from id 0, in stream order; held ones are passed
        # over), then new ones (>).
        backlog: str | None = "0"
        last_log = time.monotonic()
        while not self.stopping.is_set():
            await self.lease.renew()
            stream_id = backlog or ">"
            block = None if backlog else self._block_ms()
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.orders: stream_id}, count=READ_COUNT, block=block
            )
            entries = reply[0][1] if reply else []
            if backlog is not None:
                if not entries:
                    backlog = None
                    continue
                backlog = entries[-1][0].decode()
            else:
                entries += await self._more(entries)
            deadline = self.hold.next_deadline()
            due = deadline is not None and self.clock() >= deadline
            try:
                opened = await self.apply_and_commit(entries) if entries or due else False
            except FencedOff:
                if await self.lease.held():
                    # We hold the lease, so no one else commits: the commit that "failed"
                    # was our own, applied by Redis but its reply lost and then retried.
                    log.warning("a commit's reply was lost; reloading the committed state")
                elif await self.redis.exists(self.keys.state):
                    raise
                elif not await self.lease.acquire(self.stopping):
                    return  # Redis came back empty, lease and all: `load` restores the state
                await self.load()
                backlog = "0"
                continue
            # A gap opened: another consumer may have read the missing batch. Claim what
            # others hold pending, and read our pending list again.
            if opened and await self.claim_all():
                backlog = "0"
            if self.burst and self.incomplete:
                raise RunIncomplete(self.incomplete)
            if not entries and self.burst and self.state.ended and not self.hold:
                break
            if self.share and self.share.should_give_up():
                log.info("handing %s over to another aggregator", self.keys.orders)
                break
            if time.monotonic() - last_log >= self.log_every:
                last_log = time.monotonic()
                self.log_progress()

    def _block_ms(self) -> int | None:
        """How long a read of new entries may wait: not past the next held entry's wait;
        not at all (None) in burst mode once the run has ended with nothing held, so it
        exits as soon as what is there is applied."""
        if self.burst and self.state.ended and not self.hold:
            return None
        block = 100 if self.burst else 1000
        deadline = self.hold.next_deadline()
        if deadline is not None:
            block = max(1, min(block, int((deadline - self.clock()) * 1000) + 1))
        return block

    async def _more(
        self, first: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Read on, after the round's `first` page, while the stream has more waiting, to
        fold it into one commit; commit once it is drained (`ticker.core.rounds`: also the
        round's bounds and the commit rate's, which a run's end does not wait for)."""
        more: list[tuple[bytes, dict[bytes, bytes]]] = []
        started, got = time.monotonic(), len(first)
        ends = _ends_run(first)
        while (
            wait := self.rounds.next_read(
                started, time.monotonic(), len(first) + len(more), got, ends
            )
        ) is not COMMIT_ROUND:
            # READ_NOW: no BLOCK at all (BLOCK 0 would wait forever); else wait at most `wait`.
            block = None if wait == READ_NOW else max(1, int(wait * 1000 + 0.999))
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.orders: ">"}, count=READ_COUNT, block=block
            )
            page = reply[0][1] if reply else []
            more += page
            got = len(page)
            ends = ends or _ends_run(page)
        return more

    async def apply_and_commit(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> bool:
        """Apply and commit one round; True if it held back an entry ahead of a missing
        seq while nothing was held before (a gap opened)."""
        dead: list[DeadLetter] = []
        ack: list[bytes] = []
        todo: list[tuple[bytes, dict[bytes, bytes], Entry]] = []
        now = self.clock()
        for entry_id, fields in entries:
            if entry_id in self.hold:
                continue  # read again from the pending list: it stays held
            if not fields:  # deleted from the stream while pending
                ack.append(entry_id)
                continue
            try:
                todo.append((entry_id, fields, self._check_shard(decode(fields))))
            except BadEntry as exc:
                dead.append(self._dead_letter(entry_id, str(exc), fields))
                ack.append(entry_id)
        # Held entries first (they came first), then the new ones; what is still ahead is
        # tried again in seq order while the state moves on.
        candidates = [(h.entry_id, h.fields, h.entry) for h in self.hold.in_seq_order()]
        candidates += todo
        fired: list[Fired] = []
        applied: list[tuple[bytes, dict[bytes, bytes], Entry]] = []
        folded = self.state.folded
        while candidates:
            before = (self.state.run, self.state.last_seq, self.state.ended)
            new, rejected, ahead = self.state.apply_many([c[2] for c in candidates])
            fired += new
            bad = dict(rejected)
            later = set(ahead)
            for i, (entry_id, fields, entry) in enumerate(candidates):
                if i in later:
                    continue
                if entry_id in self.hold:
                    self.hold.release(entry_id)
                ack.append(entry_id)
                if i in bad:
                    dead.append(self._dead_letter(entry_id, bad[i], fields))
                else:
                    applied.append((entry_id, fields, entry))
            candidates = sorted((candidates[i] for i in ahead), key=lambda c: seq_key(c[2]))
            if (self.state.run, self.state.last_seq, self.state.ended) == before:
                break
        opened = False
        for entry_id, fields, entry in candidates:
            was_holding = bool(self.hold)
            if self.hold.add(Held(entry_id, fields, entry, now)) and not was_holding:
                opened = True
                log.warning(
                    "%s: seq %d expected, got %d; holding it (up to %.0fs) for the missing batches",
                    self.state.sender(entry),
                    self.state.expected_seq(entry),
                    entry.seq,
                    self.hold.wait_s,
                )
        for h in self.hold.give_up(now):
            producer = getattr(h.entry, "producer", "")
            reason = (
                f"{'producer ' + repr(producer) + ': ' if producer else ''}"
                f"seq {self.state.expected_seq(h.entry)} expected, got {h.entry.seq} (held "
                f"{now - h.since:.1f}s; the batches before it never came)"
            )
            dead.append(self._dead_letter(h.entry_id, reason, h.fields))
            ack.append(h.entry_id)
            self.state.gaps += 1
            if producer:
                gaps = self.state.producer_gaps
                gaps[producer] = gaps.get(producer, 0) + 1
            if isinstance(h.entry, End) and h.entry.run == self.state.run:
                self.incomplete = (
                    f"run {h.entry.run} cannot complete: its end entry waited for batch "
                    f"{self.state.next_seq()}, which never came (dead-lettered: {reason})"
                )
                log.error("%s", self.incomplete)
        self.state.held = len(self.hold)
        ids = ack
        where = {(e.run, e.seq): i.decode() for i, _, e in applied}
        payload = self._rows(where) if self.sharded else self.feed_payload(fired)
        await run_fenced(
            self._commit,
            [
                self.keys.state,
                self.keys.orders,
                self.out,
                self.keys.dead_letters,
                self.keys.epoch,
                self.keys.lease,
                self.keys.merged,
                self.keys.curve,
            ],
            [
                self.commit_no,
                self.state.dumps(),
                GROUP,
                self.out_maxlen,
                payload,
                self.epoch,
                self.lease.holder,
                LEASE_MS,
                self.state.brand_blob(),
                self._curve_json(),
                DEAD_LETTERS_MAXLEN,
                len(dead),
                *(arg for letter in dead for arg in letter.args()),
                *ids,
            ],
            "aggregator",
        )
        self.commit_no += 1
        self.lease.renewed = time.monotonic()
        self.rounds.committed(self.lease.renewed)
        self.stats.commits += 1
        self.stats.applied_entries += len(applied)
        self.stats.applied_orders += self.state.folded - folded
        for f in fired:
            log.info("milestone %s", f)
        return opened

    def _check_shard(self, entry: Entry) -> Entry:
        """Refuse a start entry written for another number of shards, or another shard."""
        if isinstance(entry, Start):
            mine = (self.keys.shard_index or 0, self.shards)
            theirs = (entry.shard, entry.meta.shards)
            if theirs != mine:
                raise BadEntry(
                    f"start entry of shard {theirs[0]} of {theirs[1]} on the stream of shard "
                    f"{mine[0]} of {mine[1]}: run the replay and every aggregator with the "
                    "same --shards (or TICKER_SHARDS)"
                )
        return entry

    def _rows(self, where: dict[tuple[str, int], str]) -> bytes:
        """The rows this commit applied, for the merge step (see `ticker.core.merge.Row`):
        `where` gives each applied entry's stream id by (run, seq)."""
        shard = self.keys.shard_index or 0
        rows = [[*row, shard, where[row[0], row[1]]] for row in self.state.journal]
        self.state.journal.clear()
        return orjson.dumps(rows)

    def _curve_json(self) -> bytes:
        """The full curve for `Keys.curve`; '' on a shard (the merge step writes it)."""
        return b"" if self.sharded else orjson.dumps(self.state.curve())

    def _dead_letter(self, entry_id: bytes, reason: str, fields: dict[bytes, bytes]) -> DeadLetter:
        self.state.dead_letters += 1
        log.warning("dead letter %s: %s", entry_id.decode(), reason)
        return DeadLetter(entry_id.decode(), reason, _describe(fields))

    def feed_payload(self, fired: list[Fired]) -> bytes:
        """The feed entry: the public state with the milestones fired and, of the curve,
        only its tail (the full curve goes to `Keys.curve` in the same commit)."""
        changed, self.state.changed_from = self.state.changed_from, None
        return feed_payload(self.state, fired, changed)

    def log_progress(self) -> None:
        s = self.state
        log.info(
            "sim %s  GMV RMB %s  orders %s  applied %s orders in %s commits  "
            "dead letters %s  duplicates %s",
            s.view()["sim_time"],
            f"{s.gmv_fen // 100:,}",
            f"{s.orders:,}",
            f"{self.stats.applied_orders:,}",
            self.stats.commits,
            s.dead_letters,
            s.duplicates,
        )


def _ends_run(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> bool:
    """Whether one of these entries is a run's end (by its `kind` field, before decoding)."""
    return any(fields.get(b"kind") == b"end" for _, fields in entries)


def _describe(fields: dict[bytes, bytes]) -> str:
    """A bounded, printable copy of a bad entry's fields for the dead-letter stream."""
    out: dict[str, Any] = {}
    for k, v in list(fields.items())[:20]:
        key = k.decode(errors="replace")[:40]
        out[key] = v[:200].decode(errors="replace") if len(v) <= 200 else f"<{len(v)} bytes>"
    return orjson.dumps(out).decode()
