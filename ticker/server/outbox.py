"""What to send next to one websocket client: a pure object, no I/O and no clock.

The connection tells the outbox what happened (a tick or a milestone offered, a send under
way, the time now) and asks it what to do: which `Route` a new message takes, and which
message its sender sends next (`next_message`). The outbox keeps each client's order:

- milestones and replay messages queue in order (`urgent`); ticks coalesce: only the newest
  waits (`latest_tick`), so a slow client gets the newest state when it catches up;
- the floor: a message at a position at or below the last one sent is never sent (a
  snapshot or tick already carried it); replay messages have no position and always go;
- a replay message follows the tick waiting before it (that tick carries the older state);
- the client's own rate (`max_rate`, a `Pace`) holds ticks back, never milestones;
- more than `max_urgent` messages queued: the client is stuck (an offer answers False);
- a message bypasses the queue (`Route.TRANSPORT`, `Route.SOCKET`) only when nothing is
  queued or being sent, it is new to the client, and the connection keeps up.
"""

import enum

from ticker import feed
from ticker.core.pace import Pace
from ticker.server.ticks import TickVersion

MAX_URGENT = 1_000  # milestones queued for one client before it is deemed stuck

# What a message is: its JSON text, or a tick's version, whose text (full or delta) depends
# on what the client last received, so it is chosen when the tick is sent.
Payload = bytes | TickVersion

# A message queued for one client: its position (None: a replay message, which has none),
# its payload, and whether it is a tick (sending it raises the client's floor).
Queued = tuple[feed.PositionKey | None, Payload, bool]


class Route(enum.Enum):
    """Where a new message for one client goes."""

    QUEUE = "queue"  # into the outbox: the client's sender sends it in order
    TRANSPORT = "transport"  # written now, behind the bytes the transport holds
    SOCKET = "socket"  # written now, raw to the socket (the transport holds nothing)


# The routes as plain globals: read once per client per broadcast, on the hot path.
QUEUE, TRANSPORT, SOCKET = Route.QUEUE, Route.TRANSPORT, Route.SOCKET


class Outbox:
    """One client's pending messages and the rules for what goes next."""

    __slots__ = (
        "floor",
        "latest_tick",
        "live",
        "max_urgent",
        "pace",
        "send_buffer",
        "sending",
        "urgent",
    )

    def __init__(self, rate: float, send_buffer: int, max_urgent: int = MAX_URGENT) -> None:
        self.floor: feed.PositionKey = (0, 0, 0)  # positions at or below this were sent
        self.latest_tick: tuple[feed.PositionKey, Payload] | None = None
        # In order: milestones (at their position), replay messages (no position: never
        # below the floor) and a tick that a replay message had to follow (`offer_replay`).
        # A list, not a deque: it is nearly always empty, and an empty deque costs ~600
        # bytes per client (a list 56); it holds at most `max_urgent`.
        self.urgent: list[Queued] = []
        self.pace = Pace(rate)  # the client's max_rate, as a token bucket
        self.send_buffer = send_buffer  # bytes a transport may hold and still take writes
        self.max_urgent = max_urgent
        self.live = False  # greeted: the snapshot (or resume backlog) is sent
        self.sending = False  # the connection is inside a send

    def __len__(self) -> int:
        """Messages waiting (milestones, replay messages and a tick)."""
        return len(self.urgent) + (self.latest_tick is not None)

    def route(self, key: feed.PositionKey | None, buffered: int, closing: bool, raw: bool) -> Route:
        """The route of a message at `key` (None: a replay message), given the bytes the
        transport holds, whether it is closing, and whether its socket may be written raw.

        Only when nothing older is still to come, the message is new to this client, and
        the connection keeps up, does a message bypass the queue."""
        if (
            not self.live
            or self.sending
            or self.latest_tick is not None
            or self.urgent
            or (key is not None and key <= self.floor)
            or closing
            or buffered > self.send_buffer
        ):
            return QUEUE
        return SOCKET if raw and not buffered else TRANSPORT

    def route_tick(
        self, key: feed.PositionKey, now: float, buffered: int, closing: bool, raw: bool
    ) -> Route:
        """The route of a tick: also under the client's rate. A tick routed past the queue
        counts as sent: the floor rises to `key` and the rate limit takes it."""
        if self.pace.wait(now):
            return QUEUE
        route = self.route(key, buffered, closing, raw)
        if route is not QUEUE:
            self.floor = key
            self.pace.take(now)
        return route

    def offer_tick(self, key: feed.PositionKey, text: Payload) -> bool:
        """Hold the newest tick; True if it replaced one not yet sent (coalesced)."""
        coalesced = self.latest_tick is not None
        self.latest_tick = (key, text)
        return coalesced

    def offer_urgent(self, key: feed.PositionKey | None, text: bytes) -> bool:
        """Queue a milestone (or with `key` None, a replay message); False if stuck."""
        if len(self.urgent) >= self.max_urgent:
            return False
        self.urgent.append((key, text, False))
        return True

    def offer_replay(self, text: bytes) -> bool:
        """Queue a replay message behind the tick waiting for this client, if any: that
        tick carries the replay's older state, and must not arrive after the news."""
        if self.latest_tick is not None:
            if len(self.urgent) >= self.max_urgent:
                return False
            key, tick_text = self.latest_tick
            self.latest_tick = None
            self.urgent.append((key, tick_text, True))
        return self.offer_urgent(None, text)

    def next_message(self, now: float) -> Payload | float | None:
        """What the sender does next: bytes (or a tick's version), send them; a float, wait
        that many seconds (a tick held back by the rate limit; a new offer may cut the wait
        short); None, nothing to send until the next offer.

        Milestones and replay messages first, in order; then the newest tick."""
        while self.urgent:
            key, text, is_tick = self.urgent.pop(0)
            if key is None or key > self.floor:
                if is_tick:
                    assert key is not None
                    self.floor = key
                    self.pace.take(now)
                return text
        if self.latest_tick is None:
            return None
        wait = self.pace.wait(now)
        if wait > 0:
            return wait
        (key, text), self.latest_tick = self.latest_tick, None
        if key <= self.floor:
            return None
        self.floor = key
        self.pace.take(now)
        return text

    def clear(self) -> int:
        """Discard everything waiting (the client is dropped); how many messages."""
        n = len(self)
        self.urgent.clear()
        self.latest_tick = None
        return n
