"""A Python client for the feed: typed messages, auto-reconnect, resume without gaps.

    async for msg in FeedClient("ws://127.0.0.1:8080/ws"):
        if isinstance(msg, Tick):
            print(msg.state["gmv_fen"])

It reconnects with capped exponential backoff and jitter, and resumes from the last
position it saw (`/ws?since=…&epoch=…`): the server then sends the milestones missed and a
snapshot flagged `recovered`, so no milestone is lost and no message is seen twice.
"""

import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ticker.core import delta as deltas
from ticker.core.messages import (
    Delta,
    Error,
    Hello,
    Milestone,
    Replay,
    ServerMessage,
    Snapshot,
    Subscribe,
    Tick,
    decode,
)
from ticker.supervise import Backoff

log = logging.getLogger("ticker.client")


# The messages, declared in `ticker.core.messages`, re-exported for the client's users.
__all__ = [
    "Delta",
    "DeltaWithoutBase",
    "Error",
    "FeedClient",
    "FeedUnreachable",
    "Hello",
    "Message",
    "Milestone",
    "Replay",
    "Snapshot",
    "Tick",
    "check_url",
    "feed_url",
    "parse",
    "why",
]
Message = ServerMessage


def parse(raw: str | bytes) -> Message:
    """A feed message as a typed value; raises ValueError for anything else."""
    return decode(raw)


class DeltaWithoutBase(ValueError):
    """A delta came before any full tick on this connection (the server never does that)."""


class FeedUnreachable(ConnectionError):
    """The first connection to the feed failed (with `retry_first=False`); says why."""


_HOST_PORT = re.compile(r"^[\w.-]+:\d+/?$")


def check_url(url: str) -> str:
    """`url` if it is a feed or page address (http, https, ws or wss with a host, or a bare
    host:port); raises ValueError saying what is wrong."""
    if "://" not in url:
        if not _HOST_PORT.match(url):
            raise ValueError("it has no scheme; use http://host:port/ (or ws://host:port/ws)")
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"unknown scheme {parts.scheme!r}; use http://, https://, ws:// or wss://")
    if not parts.hostname:
        raise ValueError("it has no host")
    try:
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError:
        raise ValueError("its port is not a number 1..65535") from None
    return url


def why(exc: BaseException) -> str:
    """A connection failure as one short phrase for people."""
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        if code == 404:
            return "no ticker feed at this address (HTTP 404)"
        return f"the server refused the connection (HTTP {code})"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there (is `ticker serve` running?)"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, ConnectionClosed):
        return "the server closed the connection"
    if isinstance(exc, InvalidHandshake):
        return f"not a ticker feed ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or exc.__class__.__name__
    return exc.__class__.__name__


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
        retry_first: bool = True,
        on_lost: Callable[[str], None] | None = None,
        delta: bool = False,
    ) -> None:
        """With `retry_first=False`, a first connection that fails raises FeedUnreachable
        instead of retrying. `on_lost(reason)` is called once each time a connection is lost
        (or cannot be made), before the client retries; without it, that is logged.

        With `delta=True` the server sends ticks as patches of the previous one (fewer
        bytes); the client applies them and hands out each as the `Tick` it stands for."""
        self.url, self.topics, self.max_rate, self.token = feed_url(url), topics, max_rate, token
        self.delta = delta
        self.tick_state: dict[str, Any] | None = None  # the last tick's, what a delta patches
        self.max_backoff, self.retry_first, self.on_lost = max_backoff, retry_first, on_lost
        self.position: str | None = None
        self.epoch: str | None = None
        self.connected = False

    def _whole(self, msg: Message) -> Message:
        """A delta as the tick it stands for; keep each tick's state for the next delta."""
        if isinstance(msg, Delta):
            if self.tick_state is None:
                raise DeltaWithoutBase("the server sent a delta before any tick")
            msg = Tick(msg.position, deltas.apply(self.tick_state, msg.patch))
        if isinstance(msg, Tick):
            self.tick_state = msg.state
        return msg

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
        backoff = Backoff(first=0.25, cap=self.max_backoff)
        first, reported = True, False
        while True:
            reason = "the server closed the connection"  # unless an error says more
            try:
                async with websockets.connect(self._address(), max_size=2**24) as ws:
                    self.connected, first, reported = True, False, False
                    backoff.reset()
                    self.tick_state = None
                    if self.topics is not None or self.max_rate is not None or self.delta:
                        delta = True if self.delta else None
                        request = Subscribe(self.topics, self.max_rate, delta)
                        await ws.send(request.encode().decode())
                    async for raw in ws:
                        msg = self._whole(parse(raw))
                        if isinstance(msg, Hello):
                            self.epoch = msg.epoch or self.epoch
                        elif isinstance(msg, Snapshot | Tick | Milestone):
                            self.position = msg.position
                        yield msg
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise  # retrying cannot help: wrong token or origin
                reason = why(exc)
            except (TimeoutError, ConnectionClosed, InvalidHandshake, OSError) as exc:
                reason = why(exc)
            except DeltaWithoutBase as exc:
                reason = str(exc)  # a fresh connection starts from a snapshot again
            self.connected = False
            if first and not self.retry_first:
                raise FeedUnreachable(f"cannot reach the feed at {self.url}: {reason}")
            if not reported:
                reported = True  # once per loss, not once per attempt
                if self.on_lost:
                    self.on_lost(reason)
                else:
                    log.warning("feed at %s: %s; reconnecting", self.url, reason)
            await backoff.sleep()
