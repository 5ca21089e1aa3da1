"""Where the hub reads its feed: a small interface, over Redis in production and over a list
in tests (as encode/broadcaster keeps a memory backend beside Redis).

Positions are feed entry ids (`ms-seq`); an entry is its position and its fields, as the
aggregator wrote them. A page takes XRANGE's bounds: inclusive ids, `(id` exclusive, `-`
and `+` the ends.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from ticker import feed
from ticker.keys import Keys
from ticker.redis_io import Client, client

Entry = tuple[str, dict[bytes, bytes]]


@dataclass(frozen=True)
class Head:
    """The feed's epoch, the full curve (the curve key's JSON) and the newest entry, read
    together: the curve is the one of that entry."""

    epoch: str
    curve: bytes | None
    last: Entry | None


class FeedSource(Protocol):
    """What the hub needs of the feed."""

    async def head(self) -> Head: ...

    async def after(self, position: str, block_ms: int, count: int) -> list[Entry]:
        """Up to `count` entries after `position`, waiting up to `block_ms` for one."""
        ...

    async def page(self, start: str, end: str, count: int) -> list[Entry]:
        """Up to `count` entries from `start` to `end` (XRANGE bounds), oldest first."""
        ...

    async def curve(self) -> bytes | None:
        """The curve key: the day's full curve as JSON."""
        ...

    async def epoch(self) -> str: ...

    async def replay(self) -> Any:
        """The replay's state as it wrote it (`feed.decode_replay`), or None."""
        ...


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    return entry_id.decode(), fields


class RedisFeed:
    """The feed over Redis. Its client exists between `open()` and `close()` (the app's
    lifecycle); the routes that write the control stream use it too."""

    def __init__(self, url: str, keys: Keys) -> None:
        self.url, self.keys = url, keys
        self._redis: Client | None = None

    def open(self) -> None:
        self._redis = client(self.url)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> Client:
        if self._redis is None:
            raise RuntimeError("the feed's Redis client is not open (the app is not running)")
        return self._redis

    async def head(self) -> Head:
        async with self.redis.pipeline(transaction=True) as pipe:  # the keys share a hash tag
            pipe.get(self.keys.epoch)
            pipe.get(self.keys.curve)
            pipe.xrevrange(self.keys.feed, count=1)
            epoch, curve, last = await pipe.execute()
        return Head(epoch.decode() if epoch else "", curve, _entry(*last[0]) if last else None)

    async def after(self, position: str, block_ms: int, count: int) -> list[Entry]:
        reply = await self.redis.xread({self.keys.feed: position}, block=block_ms, count=count)
        return [_entry(*e) for e in reply[0][1]] if reply else []

    async def page(self, start: str, end: str, count: int) -> list[Entry]:
        return [_entry(*e) for e in await self.redis.xrange(self.keys.feed, start, end, count)]

    async def curve(self) -> bytes | None:
        raw: bytes | None = await self.redis.get(self.keys.curve)
        return raw

    async def epoch(self) -> str:
        raw = await self.redis.get(self.keys.epoch)
        return raw.decode() if raw else ""

    async def replay(self) -> Any:
        return feed.decode_replay(await self.redis.hget(self.keys.replay, "state"))


def _bound(bound: str) -> tuple[feed.PositionKey, bool]:
    """An XRANGE bound as (position key, inclusive)."""
    if bound in ("-", "+"):
        return ((0, 0, 0) if bound == "-" else (2**64, 0, 0)), True
    if bound.startswith("("):
        return feed.position_key(bound[1:]), False
    return feed.position_key(bound), True


@dataclass
class MemoryFeed:
    """The feed as a list, for tests: `append` writes an entry as the aggregator does."""

    entries: list[Entry] = field(default_factory=list)
    epoch_: str = "e1"
    curve_: bytes | None = None
    replay_: Any = None
    reads: int = 0  # calls of `after`
    _grew: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, fields: dict[bytes, bytes], position: str | None = None) -> str:
        """Add an entry (at the next `n-0` unless `position` is given); its position."""
        position = position or f"{len(self.entries) + 1}-0"
        self.entries.append((position, fields))
        self._grew.set()
        return position

    def trim(self, keep: int) -> None:
        """Keep only the newest `keep` entries, as XADD MAXLEN does."""
        del self.entries[: max(0, len(self.entries) - keep)]

    async def head(self) -> Head:
        return Head(self.epoch_, self.curve_, self.entries[-1] if self.entries else None)

    async def after(self, position: str, block_ms: int, count: int) -> list[Entry]:
        self.reads += 1
        key = feed.position_key(position)
        found = [e for e in self.entries if feed.position_key(e[0]) > key][:count]
        if not found and block_ms:
            self._grew.clear()
            try:
                async with asyncio.timeout(block_ms / 1000):  # not wait_for (connection.close)
                    await self._grew.wait()
            except TimeoutError:
                return []
            return await self.after(position, 0, count)
        return found

    async def page(self, start: str, end: str, count: int) -> list[Entry]:
        (lo, lo_in), (hi, hi_in) = _bound(start), _bound(end)
        out = []
        for e in self.entries:
            k = feed.position_key(e[0])
            if (k > lo or (lo_in and k == lo)) and (k < hi or (hi_in and k == hi)):
                out.append(e)
        return out[:count]

    async def curve(self) -> bytes | None:
        return self.curve_

    async def epoch(self) -> str:
        return self.epoch_

    async def replay(self) -> Any:
        return self.replay_
