"""The websocket server (aiohttp), in rooms along its seams.

One task tails the feed stream and keeps the latest state (`hub`); another hands a tick to
every client at most `tick_hz` times a second on average (`Pace`); milestones go out at
once. Each message is encoded once per subscription kind, and framed once as websocket bytes.

Fan-out has two paths. The fast one: a client that is ready, has nothing queued, is due a
tick under its own rate and whose connection has taken what it was given (its transport's
write buffer is at most `Tuning.send_buffer` bytes) gets the pre-built frame written straight
to its transport by the broadcast loop (`fanout`): no task wake-up, no per-client encoding.
Every other client (slow, not yet greeted, rate-limited) goes through its own sender task
(`connection`), which holds only the newest tick plus the milestones not yet sent: a slow
client gets the newest state when it catches up, never delays anyone else, and is dropped if
it stays stuck. A client never gets a direct write while its sender holds or is sending
anything, so each client's order is kept; aiohttp writes every uncompressed frame whole and
synchronously (compression is off), so direct writes never split one of its frames (pings,
pongs, close).

Rooms: `app` (routes, their error guard, lifecycle), `hub` (the latest state, the feed reader),
`source` (where the hub reads the feed: Redis, or a list in tests), `outbox` (sans-I/O: what
to send next to one client, as routes), `connection` (one websocket client's I/O), `fanout`
(raw-frame writes from threads and C), `tuning` (timings and bounds).
"""

from ticker.server.app import FEED, HUB, LIMITER, POLICY, WEB_DIR, make_app
from ticker.server.connection import Client
from ticker.server.fanout import GIL_SWITCH_INTERVAL, Fanout
from ticker.server.hub import Hub
from ticker.server.tuning import Tuning

__all__ = [
    "FEED",
    "GIL_SWITCH_INTERVAL",
    "HUB",
    "LIMITER",
    "POLICY",
    "WEB_DIR",
    "Client",
    "Fanout",
    "Hub",
    "Tuning",
    "make_app",
]
