"""Putting a committed state back into a Redis that lost its data (restarted empty).

A Redis without persistence (or whose AOF was lost) comes back empty: no state hash, no
feed, no epoch. A process that holds a committed state in memory (an aggregator, the merge
step) is then the only copy of it. On reloading it finds no state hash, and writes its
state back under its lease, with its commit number, the curve, a NEW epoch (so servers and
clients see that the feed was lost and resync) and one feed entry. A replay that then
rewrites its run from seq 0 is all duplicates up to where the state was: nothing counts
twice and no milestone fires again. Orders written after the last commit and lost with
Redis are not in it: see the README on persistence.
"""

import logging
import uuid
from typing import Any

from redis.exceptions import ResponseError

from ticker.errors import FencedOff
from ticker.keys import Keys

log = logging.getLogger("ticker.reseed")

# KEYS: state, lease, epoch, curve, feed
# ARGV: lease token, lease ms, commit, state blob, brands blob, new epoch,
#       curve JSON ('' for none), feed maxlen, feed payload, merge blob ('' for none)
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
) -> bool:
    """Write a state back if its hash is missing (True), in one script under the lease.

    `feed` is the stream its feed entry goes to (a shard's partials, or the feed); `blobs`:
    state, brands, curve JSON (b'' for none), feed payload, merge bookkeeping (b'' for none)."""
    state, brands, curve, payload, merge = blobs
    try:
        done = await redis.eval(
            RESEED,
            5,
            keys.state,
            keys.lease,
            keys.epoch,
            keys.curve,
            feed,
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
