"""Prometheus metrics of `ticker aggregate` (`--metrics-port`): a small HTTP endpoint.

Two sources, read at each scrape:
- this process's aggregators, when it has them in hand (the unsharded path): orders and
  entries applied, commits, and the time each round of apply and commit took;
- Redis, for each shard this process aggregates (or the one stream): the committed
  state's orders and commits (whichever process made them), dead letters, gaps and held
  entries, and the consumer group's lag (entries not yet read) and pending entries (read,
  not yet committed). These are the same whichever process commits, so every aggregator
  of a sharded ticker reports them. A live run adds its producers (the `PRODUCERS_SHOWN`
  that applied a batch most recently by name, the others summed as `producer="_others"`,
  so the series stay few however many producers write), and the dead letters are counted
  by kind of reason as this process reads them from the dead-letter stream.

`ticker replay --metrics-port` serves `ReplayMetrics` the same way: what the replay wrote,
its simulated time, how far behind its clock it is, the speed asked and reached, its state.
"""

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from redis.exceptions import ResponseError

from ticker.aggregator import Aggregator
from ticker.keys import GROUP, Keys
from ticker.redis_io import TRANSIENT

log = logging.getLogger(__name__)


PRODUCERS_SHOWN = 20  # a live run's producers shown by name; the rest are summed
OTHERS = "_others"
DEAD_PAGE, DEAD_PAGES = 1_000, 10  # dead letters read a scrape: at most 10 pages of 1,000

# The kind of a dead letter, from its reason (the first rule whose text it contains):
# a bounded set of label values, whatever the reasons say.
REASON_KINDS = (
    ("expected, got", "gap"),  # held ahead of a missing seq, then given up
    ("but the current run is", "other_run"),
    (" ended at seq ", "after_end"),
    ("belongs to shard", "wrong_shard"),
    ("start entry of shard", "wrong_shard"),
    ("start entry", "bad_start"),
)
MALFORMED = "malformed"  # any other: a field or column that cannot be read
KINDS = (*dict.fromkeys(kind for _, kind in REASON_KINDS), MALFORMED)


def reason_kind(reason: str) -> str:
    """The kind of a dead letter's reason (one of KINDS)."""
    return next((kind for text, kind in REASON_KINDS if text in reason), MALFORMED)


@dataclass
class DeadLetters:
    """Dead letters of one stream by kind, read on from where the last scrape stopped."""

    after: str = "-"  # the last entry read ('-': none yet)
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    async def read(self, redis: Any, stream: str) -> None:
        for _ in range(DEAD_PAGES):
            low = "-" if self.after == "-" else f"({self.after}"
            page = await redis.xrange(stream, min=low, count=DEAD_PAGE)
            for entry_id, fields in page:
                reason = fields.get(b"reason", b"").decode(errors="replace")
                self.kinds[reason_kind(reason)] += 1
                self.after = entry_id.decode()
            if len(page) < DEAD_PAGE:
                return


@dataclass
class Producers:
    """A live run's producers in the order their figures last moved (newest last): a batch
    applied, or one given up."""

    run: str | None = None
    seen: "OrderedDict[str, object]" = field(default_factory=OrderedDict)

    def update(self, run: str | None, figures: dict[str, object]) -> None:
        if run != self.run:
            self.run, self.seen = run, OrderedDict()
        for producer, now in figures.items():
            if self.seen.get(producer) != now:
                self.seen[producer] = now
                self.seen.move_to_end(producer)

    def shown(self) -> list[str]:
        """The PRODUCERS_SHOWN that applied a batch most recently, newest first."""
        names = list(self.seen)
        return names[: -PRODUCERS_SHOWN - 1 : -1]


class Renders(Protocol):
    async def render(self) -> str: ...


@dataclass
class Rounds:
    """Rounds of apply and commit timed by `AggregatorMetrics.instrument`."""

    seconds_sum: float = 0.0
    count: int = 0


class AggregatorMetrics:
    """The metrics of one `ticker aggregate` process."""

    def __init__(self, redis: Any, shards: Sequence[Keys], workers: Sequence[Aggregator] = ()):
        self.redis, self.shards, self.workers = redis, list(shards), list(workers)
        self.rounds = Rounds()
        self.dead = {str(k.shard_index or 0): DeadLetters() for k in self.shards}
        self.producers = Producers()
        self.live: dict[str, Any] = {}  # the live run's figures of the last scrape
        for agg in self.workers:
            self.instrument(agg)

    def instrument(self, agg: Aggregator) -> None:
        """Time each round of `agg` (its apply and its atomic commit)."""
        inner: Callable[..., Awaitable[bool]] = agg.apply_and_commit

        @functools.wraps(inner)
        async def timed(*args: Any, **kwargs: Any) -> bool:
            start = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.rounds.seconds_sum += time.perf_counter() - start
                self.rounds.count += 1

        setattr(agg, "apply_and_commit", timed)  # noqa: B010 (an instance's own method)

    async def render(self) -> str:
        """Prometheus text; the Redis figures are left out while Redis does not answer."""
        out = _Text()
        stats = [a.stats for a in self.workers]
        out.metric(
            "ticker_aggregator_applied_orders_total",
            "counter",
            "Orders applied by this process's aggregators.",
            [("", sum(s.applied_orders for s in stats))],
        )
        out.metric(
            "ticker_aggregator_applied_entries_total",
            "counter",
            "Order entries (batches) applied by this process's aggregators.",
            [("", sum(s.applied_entries for s in stats))],
        )
        out.metric(
            "ticker_aggregator_commits_total",
            "counter",
            "Atomic commits made by this process's aggregators.",
            [("", sum(s.commits for s in stats))],
        )
        out.metric(
            "ticker_aggregator_round_seconds",
            "summary",
            "Time of one round: apply the entries read, then commit them atomically.",
            [("_sum", self.rounds.seconds_sum), ("_count", self.rounds.count)],
        )
        shards = await self._shards()
        out.metric(
            "ticker_aggregator_redis_up",
            "gauge",
            "1 while Redis answers this process's scrapes.",
            [("", int(shards is not None))],
        )
        for name, key, help_text in (
            ("ticker_aggregator_shard_orders_total", "orders", "Orders in the committed state."),
            ("ticker_aggregator_shard_commits_total", "commit", "Commits of the shard's state."),
            ("ticker_aggregator_dead_letters", "dead_letters", "Entries set aside as malformed."),
            ("ticker_aggregator_gaps", "gaps", "Missing batches given up on (dead-lettered)."),
            ("ticker_aggregator_held_entries", "held", "Entries held ahead of a missing batch."),
            ("ticker_aggregator_stream_lag_entries", "lag", "Order entries not yet read."),
            (
                "ticker_aggregator_stream_pending_entries",
                "pending",
                "Entries read, not yet committed.",
            ),
        ):
            samples = [(f'{{shard="{s}"}}', v[key]) for s, v in (shards or {}).items()]
            # The shard's totals restart with each run (a counter's reset to Prometheus).
            kind = "counter" if name.endswith("_total") else "gauge"
            out.metric(name, kind, help_text + " (committed, per shard)", samples)
        out.metric(
            "ticker_aggregator_dead_letters_by_reason_total",
            "counter",
            "Dead letters by kind of reason (gap, other_run, after_end, wrong_shard, "
            "bad_start, malformed), read from the dead-letter stream since this process "
            "started (from its oldest kept entry).",
            [
                (f'{{shard="{s}",reason="{k}"}}', n)
                for s, d in self.dead.items()
                for k, n in d.kinds.items()
            ],
        )
        self._render_live(out)
        return out.text()

    def _render_live(self, out: "_Text") -> None:
        """A live run's producers: a few by name, the others summed."""
        live = self.live
        shown = self.producers.shown() if live else []
        applied, gaps = live.get("producers", {}), live.get("producer_gaps", {})
        out.metric(
            "ticker_live_producers",
            "gauge",
            "Producers of the live run (a batch of theirs applied or given up).",
            [("", live.get("count", 0))],
        )

        def by_producer(values: dict[str, int]) -> list[tuple[str, int]]:
            rest = sum(v for p, v in values.items() if p not in shown)
            rows = [(f'{{producer="{_label(p)}"}}', values.get(p, 0)) for p in shown]
            return [*rows, (f'{{producer="{OTHERS}"}}', rest)] if live else []

        out.metric(
            "ticker_live_producer_batches_total",
            "counter",
            f"Batches applied per producer of the live run (its last seq): the "
            f"{PRODUCERS_SHOWN} that applied one most recently, the rest as {OTHERS}.",
            by_producer(applied),
        )
        out.metric(
            "ticker_live_producer_gaps_total",
            "counter",
            "Batches of a producer dead-lettered because the seqs before them never came.",
            by_producer(gaps),
        )
        out.metric(
            "ticker_live_producer_unapplied_batches",
            "gauge",
            "Batches a producer has written that are not applied yet (in the stream, held "
            "ahead of a gap, or lost), for the producers shown by name.",
            [
                (f'{{producer="{_label(p)}"}}', max(0, w - applied.get(p, 0)))
                for p, w in live.get("written", {}).items()
            ],
        )

    async def _shards(self) -> dict[str, dict[str, int]] | None:
        """Per shard: the committed state's counters and the consumer group's backlog."""
        figures: dict[str, dict[str, int]] = {}
        try:
            for keys in self.shards:
                commit, raw = await self.redis.hmget(keys.state, ["commit", "state"])
                state = orjson.loads(raw) if raw else {}
                row = {k: int(state.get(k) or 0) for k in ("dead_letters", "gaps", "held")}
                row["orders"], row["commit"] = int(state.get("orders") or 0), int(commit or 0)
                row["lag"] = row["pending"] = 0
                try:
                    groups = await self.redis.xinfo_groups(keys.orders)
                except ResponseError:  # no orders stream yet
                    groups = []
                for g in groups:
                    if g["name"] in (GROUP, GROUP.encode()):
                        row["lag"], row["pending"] = int(g.get("lag") or 0), int(g["pending"])
                figures[str(keys.shard_index or 0)] = row
                await self.dead[str(keys.shard_index or 0)].read(self.redis, keys.dead_letters)
                if (state.get("meta") or {}).get("live"):
                    await self._live(keys, state)
                elif len(self.shards) == 1:
                    self.live = {}
        except TRANSIENT as exc:
            log.debug("metrics: Redis unavailable (%s)", exc)
            return None
        return figures

    async def _live(self, keys: Keys, state: dict[str, Any]) -> None:
        applied = {str(p): int(v) for p, v in (state.get("producers") or {}).items()}
        gaps = {str(p): int(v) for p, v in (state.get("producer_gaps") or {}).items()}
        figures = {p: (applied.get(p, 0), gaps.get(p, 0)) for p in {**applied, **gaps}}
        self.producers.update(state.get("run"), dict(figures))
        shown = self.producers.shown()
        written = await self.redis.hmget(keys.producers, shown) if shown else []
        self.live = {
            "producers": applied,
            "producer_gaps": gaps,
            "count": len(figures),
            "written": {p: int(w) for p, w in zip(shown, written, strict=True) if w is not None},
        }


def _label(value: str) -> str:
    """A label value in the Prometheus text format (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ReplayMetrics:
    """The metrics of one `ticker replay` process, read from its `Replay` at each scrape."""

    STATES = ("running", "paused", "waiting", "ended")

    def __init__(self, replay: Any) -> None:
        self.replay = replay  # a simulator.replay.Replay (the package never imports it)

    async def render(self) -> str:
        p, clock = self.replay.progress, self.replay.clock
        now = (
            "ended"
            if p.done
            else "paused"
            if clock.paused
            else "waiting"
            if p.waiting
            else "running"
        )
        out = _Text()
        for name, kind, help_text, value in (
            ("ticker_replay_orders_written_total", "counter", "Orders written.", p.orders),
            ("ticker_replay_gmv_written_fen_total", "counter", "GMV written, fen.", p.gmv_fen),
            ("ticker_replay_batches_written_total", "counter", "Order entries written.", p.batches),
            (
                "ticker_replay_sim_time_seconds",
                "gauge",
                "Simulated time of day reached (seconds since 00:00).",
                p.sim_ms / 1000,
            ),
            (
                "ticker_replay_behind_seconds",
                "gauge",
                "How far the writes are behind the replay clock (simulated seconds).",
                p.behind_ms / 1000,
            ),
            (
                "ticker_replay_speed",
                "gauge",
                "Speed asked (simulated seconds a second; 0: as fast as possible).",
                clock.speed or 0,
            ),
            (
                "ticker_replay_speed_reached",
                "gauge",
                "Speed reached since the start or the last change of speed.",
                p.speed_reached,
            ),
            (
                "ticker_replay_backlog_entries",
                "gauge",
                "Entries written that the aggregators have yet to take (while it waits).",
                p.backlog,
            ),
        ):
            out.metric(name, kind, help_text, [("", value)])
        out.metric(
            "ticker_replay_state",
            "gauge",
            "1 for the replay's state now (running, paused, waiting for the aggregators, "
            "ended), 0 for the others.",
            [(f'{{state="{s}"}}', int(s == now)) for s in self.STATES],
        )
        return out.text()


class _Text:
    """Prometheus text lines, as `ticker.metrics` writes them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            suffix, labels = (labels, "") if labels.startswith("_") else ("", labels)
            text = str(value) if isinstance(value, int) else repr(float(value))
            self.lines.append(f"{name}{suffix}{labels} {text}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def serve(metrics: Renders, host: str, port: int) -> web.AppRunner:
    """Serve `GET /metrics` on host:port until the returned runner is cleaned up."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=await metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("metrics on http://%s:%s/metrics", host, bound)
    return runner
