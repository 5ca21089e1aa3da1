"""One broadcast tick's state, and its encodings: full per subscription, or a delta.

Every tick the hub broadcasts is a `TickVersion`: the state at that position (a copy, so
that a replay status arriving later does not change what was sent) and the texts made from
it, each encoded once and shared by every client that gets the same bytes:

- a full tick per set of topics (`full`);
- a delta per (the version the client last received, topics) (`text`): clients in step
  share one patch; a client that skipped versions (coalesced, rate-limited) gets its own,
  against what it last received. A full tick instead when no patch is smaller.

A client's base (the version it last received a tick or delta of) is kept on the client;
the version keeps only its serial number in its cache's keys, so versions never chain.
"""

from typing import Any

from ticker import feed
from ticker.core import delta

Encoded = tuple[bytes, bytes]  # the JSON text and its websocket frame


class TickVersion:
    """The state of one broadcast tick and its encodings (see the module)."""

    __slots__ = ("deltas", "full", "key", "position", "serial", "state")

    def __init__(self, serial: int, position: str, state: dict[str, Any]) -> None:
        self.serial, self.position, self.state = serial, position, state
        self.key = feed.position_key(position)
        self.full: dict[frozenset[str], Encoded] = {}
        self.deltas: dict[tuple[int, frozenset[str]], Encoded] = {}

    def full_tick(self, topics: frozenset[str]) -> Encoded:
        enc = self.full.get(topics)
        if enc is None:
            text = feed.tick(feed.only(self.state, topics), self.position).encode()
            enc = self.full[topics] = (text, feed.text_frame(text))
        return enc

    def text(self, base: "TickVersion | None", topics: frozenset[str]) -> Encoded:
        """What a delta client whose last tick was `base` (None: none since its snapshot
        or its last subscription) gets: the patch from `base`, or the full tick when no
        patch is smaller."""
        if base is None or base.serial == self.serial:
            return self.full_tick(topics)
        k = (base.serial, topics)
        enc = self.deltas.get(k)
        if enc is None:
            full = self.full_tick(topics)
            patch = delta.diff(feed.only(base.state, topics), feed.only(self.state, topics))
            enc = full
            if patch is not None:
                text = feed.delta(patch, self.position).encode()
                if len(text) < len(full[0]):
                    enc = (text, feed.text_frame(text))
            self.deltas[k] = enc
        return enc
