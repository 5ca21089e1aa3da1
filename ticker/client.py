"""A Python client for the feed: typed messages, auto-reconnect, resume without gaps.

    async for msg in FeedClient("ws://127.0.0.1:8080/ws"):
        if isinstance(msg, Tick):
            print(msg.state["gmv_fen"])

It reconnects with capped exponential backoff and jitter, and resumes from the last
position it saw (`/ws?since=…&epoch=…`): the server then sends the milestones missed and a
snapshot flagged `recovered`, so no milestone is lost and no message is seen twice.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger("ticker.client")


@dataclass(frozen=True)
class Hello:
    protocol: int
    epoch: str
    server: str


@dataclass(frozen=True)
class Snapshot:
    position: str
    epoch: str
    state: dict[str, Any]
    recovered: bool | None = None  # None on a fresh connection; False when a gap was unavoidable


@dataclass(frozen=True)
class Tick:
    position: str
    state: dict[str, Any]


@dataclass(frozen=True)
class Milestone:
    position: str
    milestone: dict[str, Any]


@dataclass(frozen=True)
class Error:
    code: str
    message: str


Message = Hello | Snapshot | Tick | Milestone | Error


def parse(raw: str | bytes) -> Message:
    """A feed message as a typed value; raises ValueError for anything else."""
    m = orjson.loads(raw)
    kind = m.get("type") if isinstance(m, dict) else None
    if kind == "hello":
        return Hello(m["protocol"], m["epoch"], m["server"])
    if kind == "snapshot":
        return Snapshot(m["position"], m["epoch"], m["state"], m.get("recovered"))
    if kind == "tick":
        return Tick(m["position"], m["state"])
    if kind == "milestone":
        return Milestone(m["position"], m["milestone"])
    if kind == "error":
        return Error(m["code"], m["message"])
    raise ValueError(f"unknown feed message type {kind!r}")


def feed_url(url: str) -> str:
    """Accept the page's address (http://host:port/) or the feed's (ws://host:port/ws)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/ws") else parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class FeedClient:
    """Iterate over feed messages forever, reconnecting and resuming as needed."""

    def __init__(
        self,
        url: str,
        topics: list[str] | None = None,
        max_rate: float | None = None,
        token: str | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.url, self.topics, self.max_rate, self.token = feed_url(url), topics, max_rate, token
        self.max_backoff = max_backoff
        self.position: str | None = None
        self.epoch: str | None = None
        self.connected = False

    def _address(self) -> str:
        query = {}
        if self.position is not None:
            query["since"] = self.position
            if self.epoch:
                query["epoch"] = self.epoch
        if self.token:
            query["token"] = self.token
        return f"{self.url}?{urlencode(query)}" if query else self.url

    async def __aiter__(self) -> AsyncIterator[Message]:
        delay = 0.25
        while True:
            try:
                async with websockets.connect(self._address(), max_size=2**24) as ws:
                    self.connected = True
                    delay = 0.25
                    if self.topics is not None or self.max_rate is not None:
                        request: dict[str, Any] = {"type": "subscribe"}
                        if self.topics is not None:
                            request["topics"] = self.topics
                        if self.max_rate is not None:
                            request["max_rate"] = self.max_rate
                        await ws.send(orjson.dumps(request).decode())
                    async for raw in ws:
                        msg = parse(raw)
                        if isinstance(msg, Hello):
                            self.epoch = msg.epoch or self.epoch
                        elif isinstance(msg, Snapshot | Tick | Milestone):
                            self.position = msg.position
                        yield msg
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise  # retrying cannot help: wrong token or origin
                log.warning("feed refused the connection (%s)", exc.response.status_code)
            except (TimeoutError, ConnectionClosed, InvalidHandshake, OSError) as exc:
                log.warning("feed connection lost (%s); reconnecting", exc.__class__.__name__)
            self.connected = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_backoff)
