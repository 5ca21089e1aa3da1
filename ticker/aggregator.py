"""The aggregator's I/O shell: consume order batches, commit state atomically, feed updates.

Each round reads up to `count` entries through the consumer group, folds them into the
state (the pure core), and commits in one Lua script: the state and its commit number, the
XACK of those entries, the dead letters and one feed entry. A crash before the commit
loses nothing (the entries are still pending and are read again, `0` before `>`); a crash
after it repeats nothing. A stale aggregator (one that another has committed past) is
fenced off by the commit number.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ResponseError

from ticker.core.aggregate import Fired, State
from ticker.core.batch import BadEntry, End, Entry, Orders, Start, decode
from ticker.errors import FencedOff
from ticker.keys import GROUP, Keys
from ticker.redis_io import TRANSIENT, client

log = logging.getLogger("ticker.aggregate")

FEED_MAXLEN = 10_000
READ_COUNT = 128
# A round keeps reading while the stream has more (up to ROUND_SECONDS or
# ROUND_MAX_ENTRIES), and at least until COMMIT_INTERVAL after the previous commit, then
# commits once: the state (with one counter per brand, ~1.5 MB) is written at most ~20
# times a second however fast orders arrive. At 1x, batches come every 100 ms, so no
# round waits.
ROUND_SECONDS = 0.1
ROUND_MAX_ENTRIES = 4 * READ_COUNT
COMMIT_INTERVAL = 0.05

# KEYS: state, orders, feed, dead letters, epoch, lease
# ARGV: expected commit, state blob, group, feed maxlen, feed payload, new epoch,
#       consumer name, lease ms, brand tally blob, number of dead letters D, then D
#       triples (original id, reason, raw fields as JSON), then the ids to acknowledge.
COMMIT = """
if redis.call('GET', KEYS[6]) ~= ARGV[7] then
  return redis.error_reply('FENCED the lease is no longer held by ' .. ARGV[7])
end
local commit = tonumber(redis.call('HGET', KEYS[1], 'commit') or '0')
if commit ~= tonumber(ARGV[1]) then
  return redis.error_reply('FENCED state is at commit ' .. commit .. ', not ' .. ARGV[1])
end
redis.call('PEXPIRE', KEYS[6], ARGV[8])
redis.call('HSET', KEYS[1], 'commit', commit + 1, 'state', ARGV[2], 'brands', ARGV[9])
redis.call('SET', KEYS[5], ARGV[6], 'NX')
local dead = tonumber(ARGV[10])
local i = 11
for _ = 1, dead do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*',
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
if keep ~= nil and keep ~= '0-0' then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', keep)
end
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'u', ARGV[5])
"""


# Take the lease if free, or renew it if ours. KEYS: lease; ARGV: consumer, lease ms.
LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
LEASE_MS = 5_000  # a dead aggregator's shard is taken over within this (plus a poll)


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
    ) -> None:
        self.redis_url, self.keys, self.burst = redis_url, keys, burst
        self.consumer = consumer or f"{socket.gethostname()}-aggregator"
        self.log_every = log_every
        self.state = State()
        self.commit_no = 0
        self.epoch = uuid.uuid4().hex[:12]
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.redis = client(redis_url)
        self._commit = self.redis.register_script(COMMIT)
        self._lease = self.redis.register_script(LEASE)
        self.lease_renewed = 0.0
        self.accept_gaps = False  # set after claiming every pending entry (see `run`)
        self.last_commit = 0.0

    async def load(self) -> None:
        """Reload the committed state and make sure the consumer group exists."""
        raw = await self.redis.hmget(self.keys.state, ["commit", "state", "brands"])
        self.commit_no = int(raw[0] or 0)
        self.state = State.loads(raw[1], raw[2]) if raw[1] else State()
        try:
            await self.redis.xgroup_create(self.keys.orders, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def hold_lease(self) -> None:
        """Wait until this aggregator holds the lease (one active aggregator at a time)."""
        said = False
        while not await self._lease(keys=[self.keys.lease], args=[self.consumer, LEASE_MS]):
            if self.stopping.is_set():
                return
            if not said:
                holder = await self.redis.get(self.keys.lease)
                log.info("standing by: %s holds the lease", (holder or b"?").decode())
                said = True
            await asyncio.sleep(LEASE_MS / 5000)
        self.lease_renewed = time.monotonic()

    async def release_lease(self) -> None:
        """On a clean stop, free the lease so a standby takes over at once."""
        await self.redis.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
            1,
            self.keys.lease,
            self.consumer,
        )

    async def renew_lease(self) -> None:
        if time.monotonic() - self.lease_renewed < LEASE_MS / 3000:
            return
        if not await self._lease(keys=[self.keys.lease], args=[self.consumer, LEASE_MS]):
            raise FencedOff(
                "lost the lease to another aggregator; stopping so nothing is counted twice"
            )
        self.lease_renewed = time.monotonic()

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
        """Consume until stopped; in burst mode, until the replay ended and all is applied."""
        await self.hold_lease()
        if self.stopping.is_set():
            return
        await self.load()
        claimed = await self.claim_all()
        if claimed:
            log.info("claimed %d entries read earlier but never committed", claimed)
        backlog = True  # first finish our own pending entries (id 0), then new ones (>)
        last_log = time.monotonic()
        while not self.stopping.is_set():
            await self.renew_lease()
            stream_id = "0" if backlog else ">"
            block = None if backlog else (100 if self.burst else 1000)
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.orders: stream_id}, count=READ_COUNT, block=block
            )
            entries = reply[0][1] if reply else []
            if backlog and not entries:
                backlog = False
                continue
            if not backlog:
                entries += await self._more(len(entries))
            try:
                committed = not entries or await self.apply_and_commit(entries)
            except FencedOff:
                if await self.redis.get(self.keys.lease) != self.consumer.encode():
                    raise
                # We hold the lease, so no one else commits: the commit that "failed" was
                # our own, applied by Redis but its reply lost and the command retried.
                log.warning("a commit's reply was lost; reloading the committed state")
                await self.load()
                backlog = True
                continue
            if not committed:
                # A batch is missing before these: another consumer read it. Claim it and
                # re-read our pending list in stream order; a gap left after that is real.
                await self.claim_all()
                self.accept_gaps = True
                backlog = True
            elif not entries and self.burst and self.state.ended:
                break
            if time.monotonic() - last_log >= self.log_every:
                last_log = time.monotonic()
                self.log_progress()

    async def _more(self, got: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Read on while the stream has entries waiting, to fold them into one commit."""
        more: list[tuple[bytes, dict[bytes, bytes]]] = []
        deadline = time.monotonic() + ROUND_SECONDS
        not_before = self.last_commit + COMMIT_INTERVAL
        while len(more) + READ_COUNT <= ROUND_MAX_ENTRIES:
            now = time.monotonic()
            if got == READ_COUNT and now < deadline:
                block = None  # more is waiting: take it at once
            elif now < not_before:
                block = max(1, int((not_before - now) * 1000))  # too soon to commit again
            else:
                break
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.orders: ">"}, count=READ_COUNT, block=block
            )
            page = reply[0][1] if reply else []
            more += page
            got = len(page)
        return more

    async def apply_and_commit(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> bool:
        """Apply and commit one round; False (nothing done) if a batch is missing first."""
        dead: list[str] = []
        ids: list[bytes] = []
        decoded: list[Entry] = []
        origin: list[int] = []  # index in `entries` of each decoded entry
        for i, (entry_id, fields) in enumerate(entries):
            ids.append(entry_id)
            if not fields:  # deleted from the stream while pending
                continue
            try:
                decoded.append(decode(fields))
                origin.append(i)
            except BadEntry as exc:
                dead += self._dead_letter(entry_id, str(exc), fields)
        if not self.accept_gaps and self._gap_first(decoded):
            self.state.dead_letters -= len(dead) // 3  # counted again when re-read
            return False
        self.accept_gaps = False
        fired, rejected = self.state.apply_many(decoded)
        for index, reason in rejected:
            entry_id, fields = entries[origin[index]]
            dead += self._dead_letter(entry_id, reason, fields)
        orders = sum(len(e.amt) for e in decoded if isinstance(e, Orders))
        payload = self.feed_payload(fired)
        try:
            await self._commit(
                keys=[
                    self.keys.state,
                    self.keys.orders,
                    self.keys.feed,
                    self.keys.dead_letters,
                    self.keys.epoch,
                    self.keys.lease,
                ],
                args=[
                    self.commit_no,
                    self.state.dumps(),
                    GROUP,
                    FEED_MAXLEN,
                    payload,
                    self.epoch,
                    self.consumer,
                    LEASE_MS,
                    self.state.brand_blob(),
                    len(dead) // 3,
                    *dead,
                    *ids,
                ],
            )
        except ResponseError as exc:
            if str(exc).startswith("FENCED"):
                raise FencedOff(
                    f"another aggregator committed first ({exc}); this one stops "
                    "so nothing is counted twice"
                ) from None
            raise
        self.commit_no += 1
        self.lease_renewed = self.last_commit = time.monotonic()
        self.stats.commits += 1
        self.stats.applied_entries += len(entries)
        self.stats.applied_orders += orders
        for f in fired:
            log.info(
                "milestone %s (%s) at %s",
                f.milestone.id,
                f.milestone.label,
                f.to_dict()["sim_time"],
            )
        return True

    def _gap_first(self, decoded: list[Entry]) -> bool:
        """Whether the first new batch of the current run skips a seq number."""
        for entry in decoded:
            if isinstance(entry, Orders | End) and entry.run == self.state.run:
                if entry.seq > self.state.last_seq:
                    return entry.seq > self.state.last_seq + 1
            elif isinstance(entry, Start) and entry.run != self.state.run:
                return False  # a new run begins: its own numbering starts at 0
        return False

    def _dead_letter(self, entry_id: bytes, reason: str, fields: dict[bytes, bytes]) -> list[str]:
        self.state.dead_letters += 1
        log.warning("dead letter %s: %s", entry_id.decode(), reason)
        return [entry_id.decode(), reason, _describe(fields)]

    def feed_payload(self, fired: list[Fired]) -> bytes:
        view = self.state.view()
        view["fired"] = [f.to_dict() for f in fired]
        return orjson.dumps(view)

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


def _describe(fields: dict[bytes, bytes]) -> str:
    """A bounded, printable copy of a bad entry's fields for the dead-letter stream."""
    out: dict[str, Any] = {}
    for k, v in list(fields.items())[:20]:
        key = k.decode(errors="replace")[:40]
        out[key] = v[:200].decode(errors="replace") if len(v) <= 200 else f"<{len(v)} bytes>"
    return orjson.dumps(out).decode()


async def run_forever(agg: Aggregator) -> None:
    """Run, riding out Redis outages with capped exponential backoff and jitter.

    Logs one line when an outage starts and one when it ends; every retry reloads the
    committed state, so nothing read but uncommitted is counted twice.
    """
    delay, outage_since = 0.1, None
    while not agg.stopping.is_set():
        try:
            if outage_since is not None:
                await agg.redis.ping()
                log.info(
                    "Redis is back after %.1fs; resuming from the last commit",
                    time.monotonic() - outage_since,
                )
                outage_since, delay = None, 0.1
            await agg.run()
            await agg.release_lease()
            return
        except TRANSIENT as exc:
            if outage_since is None:
                outage_since = time.monotonic()
                log.warning(
                    "Redis unavailable (%s: %s); retrying with backoff", exc.__class__.__name__, exc
                )
            await asyncio.sleep(delay * (0.5 + os.urandom(1)[0] / 255))
            delay = min(delay * 2, 5.0)
