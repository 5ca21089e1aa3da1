"""Every Redis key and stream name, in one place.

Keys of one ticker share a hash tag (`{name}`) so that on Redis Cluster they live in one
slot and the aggregator's atomic commit (a Lua script over several keys) stays legal. A
sharded ticker adds one tag per shard (`{name/3}`): each shard's orders, partial state and
lease share a slot, and the shards spread over the cluster.
"""

from dataclasses import dataclass

GROUP = "aggregators"

# The caps of the capped streams (XADD MAXLEN ~, in entries), passed to the scripts as ARGV.
FEED_MAXLEN = 10_000
# The merge step trims a shard's partials behind itself; this cap only guards against a
# merge step that never runs (the orders streams' backlog bounds what it can fall behind).
PARTIALS_MAXLEN = 100_000
CONTROL_MAXLEN = 1_000  # replay commands kept
DEAD_LETTERS_MAXLEN = 100_000  # malformed order entries kept, newest last


@dataclass(frozen=True)
class Keys:
    """The keys of one ticker namespace (default `main`)."""

    namespace: str = "main"
    shard_index: int | None = None  # None: the namespace's global keys

    def _key(self, suffix: str) -> str:
        tag = self.namespace if self.shard_index is None else f"{self.namespace}/{self.shard_index}"
        return f"ticker:{{{tag}}}:{suffix}"

    def shard(self, index: int) -> "Keys":
        """The keys of shard `index` (its orders stream, partial state, lease...)."""
        return Keys(self.namespace, index)

    @property
    def orders(self) -> str:
        """Stream of order batches written by the simulator."""
        return self._key("orders")

    @property
    def feed(self) -> str:
        """Capped stream of state updates; its entry ids are the feed positions."""
        return self._key("feed")

    @property
    def state(self) -> str:
        """Hash with the aggregator's committed state and commit counter."""
        return self._key("state")

    @property
    def dead_letters(self) -> str:
        """Stream of malformed order entries, each with the reason and its original id."""
        return self._key("dead")

    @property
    def epoch(self) -> str:
        """Random id of the feed's lifetime; it changes when the feed was lost."""
        return self._key("epoch")

    @property
    def replay(self) -> str:
        """Hash with the replay clock's state, written by the simulator."""
        return self._key("replay")

    @property
    def lease(self) -> str:
        """Which aggregator may consume now; it expires unless renewed (takeover)."""
        return self._key("lease")

    @property
    def partials(self) -> str:
        """A shard's stream of what each commit applied, batch by batch, for the merge step."""
        return self._key("partials")

    @property
    def merged(self) -> str:
        """The newest orders entry of a shard the merge step is done with (trim floor)."""
        return self._key("merged")

    @property
    def aggregators(self) -> str:
        """Sorted set of live aggregator processes (score: when their heartbeat expires)."""
        return self._key("aggregators")

    @property
    def control(self) -> str:
        """Capped stream of replay commands (pause, resume, speed, seek) for the simulator."""
        return self._key("control")

    @property
    def curve(self) -> str:
        """The day's curve so far (JSON, see `ticker.core.timeline`), written with each
        feed entry; feed entries carry only its tail."""
        return self._key("curve")

    @property
    def live(self) -> str:
        """Hash naming the open live run (`run`, `meta` as JSON, `ended`), for producers."""
        return self._key("live")

    @property
    def producers(self) -> str:
        """Hash of the last seq each producer wrote to the live run's orders stream."""
        return self._key("producers")

    @property
    def order_ids(self) -> str:
        """Set of the order ids taken over HTTP in the live run (a resent order counts once)."""
        return self._key("order-ids")
