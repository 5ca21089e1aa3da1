"""A lease in Redis: which process may act on a key range now; it expires unless renewed.

A process that stops renewing (killed, stopped, cut off) loses it within LEASE_MS, and a
standby takes over. Holding the lease is not enough to be safe on its own (a paused holder
may not know it lost it): every commit also checks it inside the commit's script.

The lease's value is a token unique to one `Lease` object, its holder's name plus a random
instance id (`<name>#<hex>`): two processes started with the same name still fence each
other off, each seeing the other's token as someone else's.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from ticker.errors import FencedOff

log = logging.getLogger("ticker.lease")

LEASE_MS = 5_000  # a dead holder's work is taken over within this (plus a poll)

# Take the lease if free, or renew it if ours. KEYS: lease; ARGV: holder, lease ms.
TAKE_OR_RENEW = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def fence(lease: str, holder: str, state: str, expected: str, lease_ms: str) -> str:
    """The Lua that opens every commit script: refuse (an error starting FENCED) unless
    `holder` has the lease and the state hash is at the `expected` commit number, then
    renew the lease. Leaves the local `commit`. Arguments are Lua expressions
    (e.g. `KEYS[6]`, `ARGV[7]`)."""
    return f"""
if redis.call('GET', {lease}) ~= {holder} then
  return redis.error_reply('FENCED the lease is no longer held by ' .. {holder})
end
local commit = tonumber(redis.call('HGET', {state}, 'commit') or '0')
if commit ~= tonumber({expected}) then
  return redis.error_reply('FENCED state is at commit ' .. commit .. ', not ' .. {expected})
end
redis.call('PEXPIRE', {lease}, {lease_ms})
"""


RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"


def token(name: str) -> str:
    """A lease value for `name` that no other holder has: the name and a random instance id."""
    return f"{name}#{secrets.token_hex(6)}"


class Lease:
    def __init__(self, redis: Any, key: str, name: str) -> None:
        """`holder` (the value written to the key) is `name` made unique (see `token`)."""
        self.redis, self.key, self.name = redis, key, name
        self.holder = token(name)
        self._take = redis.register_script(TAKE_OR_RENEW)
        self.renewed = 0.0  # monotonic time of the last renewal (a commit renews it too)

    async def acquire(
        self, stopping: asyncio.Event, may_take: Callable[[], bool] | None = None
    ) -> bool:
        """Wait until this holder has the lease (True), or until stopping (False).

        `may_take` is asked before each try; False means stand by (another process
        should take this one).
        """
        said = False
        while True:
            if stopping.is_set():
                return False
            if (may_take is None or may_take()) and await self._try():
                self.renewed = time.monotonic()
                return True
            if not said:
                holder = await self.redis.get(self.key)
                log.info("standing by for %s: %s", self.key, (holder or b"nobody").decode())
                said = True
            await asyncio.sleep(LEASE_MS / 5000)

    async def renew(self) -> None:
        """Renew once a third of the lease has passed; FencedOff if another holds it."""
        if time.monotonic() - self.renewed < LEASE_MS / 3000:
            return
        if not await self._try():
            raise FencedOff(
                f"lost {self.key} to another process; stopping so nothing is counted twice"
            )
        self.renewed = time.monotonic()

    async def held(self) -> bool:
        return bool(await self.redis.get(self.key) == self.holder.encode())

    async def release(self) -> None:
        """On a clean stop, free the lease so a standby takes over at once."""
        await self.redis.eval(RELEASE, 1, self.key, self.holder)

    async def _try(self) -> bool:
        return bool(await self._take(keys=[self.key], args=[self.holder, LEASE_MS]))
