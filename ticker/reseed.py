"""Putting a committed state back into a Redis that lost its data (restarted empty).

A Redis without persistence (or whose AOF was lost) comes back empty: no state hash, no
feed, no epoch. A process that holds a committed state in memory (an aggregator, the merge
step) is then the only copy of it. On reloading it finds no state hash, and writes its
state back under its lease, with its commit number, the curve, a NEW epoch (so servers and
clients see that the feed was lost and resync) and one feed entry. A replay that then
rewrites its run from seq 0 is all duplicates up to where the state was: nothing counts
twice and no milestone fires again. Orders written after the last commit and lost with
Redis are not in it: see the README on persistence.

A live run also lives in keys that producers write through (`Keys.live`, `Keys.producers`,
`Keys.order_ids`). When the state is a live run, the same script names the run again
(`live`: run, meta, ended as the state has them) and sets each producer's last seq to the
one the state applied, so a producer that resends its next batch continues its sequence,
and the HTTP producer's batches are numbered after the last one applied (numbered from 1
again they would all be taken for repeats). What cannot come back: the ids of the orders
taken over HTTP before the loss (an order sent again after it counts again; the state
keeps totals, not ids), batches a producer wrote after the last commit (lost with Redis:
that producer's next batch is then refused as a gap, `ProducerError`, and it must resend
from the state's seq), and an `--audit` run's kept stream (`live verify` then refuses).
"""

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from ticker.core.aggregate import State
from ticker.errors import FencedOff
from ticker.keys import Keys

log = logging.getLogger("ticker.reseed")

# KEYS: state, lease, epoch, curve, feed, and for a live run: live, producers
# ARGV: lease token, lease ms, commit, state blob, brands blob, new epoch,
#       curve JSON ('' for none), feed maxlen, feed payload, merge blob ('' for none),
#       then for a live run: run, meta JSON, ended ('1'/'0'), then producer/seq pairs
RESEED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease is no longer held by ' .. ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'commit', ARGV[3], 'state', ARGV[4], 'brands', ARGV[5])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'merge', ARGV[10]) end
redis.call('SET', KEYS[3], ARGV[6])
if ARGV[7] ~= '' then redis.call('SET', KEYS[4], ARGV[7]) end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'u', ARGV[9])
if KEYS[6] and redis.call('EXISTS', KEYS[6]) == 0 then
  redis.call('HSET', KEYS[6], 'run', ARGV[11], 'meta', ARGV[12], 'ended', ARGV[13])
  redis.call('DEL', KEYS[7])
  if #ARGV > 13 then redis.call('HSET', KEYS[7], unpack(ARGV, 14)) end
end
return 1
"""


def new_epoch() -> str:
    """A fresh id for the feed's lifetime."""
    return uuid.uuid4().hex[:12]


async def reseed(
    redis: Any,
    keys: Keys,
    feed: str,
    token: str,
    lease_ms: int,
    commit: int,
    blobs: tuple[bytes, bytes, bytes, bytes, bytes],
    feed_maxlen: int,
    epoch: str,
    live: "LiveRun | None" = None,
) -> bool:
    """Write a state back if its hash is missing (True), in one script under the lease.

    `feed` is the stream its feed entry goes to (a shard's partials, or the feed); with `live`
    the live run and its producers' sequences are restored too; `blobs`: state, brands, curve
    JSON (b'' for none), feed payload, merge bookkeeping (b'' for none)."""
    state, brands, curve, payload, merge = blobs
    names = [keys.state, keys.lease, keys.epoch, keys.curve, feed]
    extra: list[Any] = []
    if live is not None:
        names += [keys.live, keys.producers]
        extra = [live.run, live.meta_json, "1" if live.ended else "0"]
        extra += [x for producer, seq in sorted(live.producers.items()) for x in (producer, seq)]
    try:
        done = await redis.eval(
            RESEED,
            len(names),
            *names,
            token,
            lease_ms,
            commit,
            state,
            brands,
            epoch,
            curve,
            feed_maxlen,
            payload,
            merge,
            *extra,
        )
    except ResponseError as exc:
        if str(exc).startswith("FENCED"):
            raise FencedOff(f"lost the lease while restoring the state ({exc})") from None
        raise
    if done:
        log.warning(
            "Redis lost its data (no state at %s): restored commit %d from memory with a "
            "new feed epoch %s; orders written after that commit and not persisted are lost",
            keys.state,
            commit,
            epoch,
        )
    return bool(done)


@dataclass(frozen=True)
class LiveRun:
    """What producers need of a live run, as a state that applied it knows it."""

    run: str
    meta_json: bytes
    ended: bool
    producers: dict[str, int]

    @classmethod
    def of(cls, state: State) -> "LiveRun | None":
        """The live run of `state`, or None when it is not applying one."""
        if state.meta is None or not state.meta.live or state.run is None:
            return None
        return cls(state.run, state.meta.to_json(), state.ended, dict(state.producers))
