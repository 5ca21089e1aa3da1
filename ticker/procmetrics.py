"""Prometheus metrics of `ticker aggregate` (`--metrics-port`): a small HTTP endpoint.

Two sources, read at each scrape:
- this process's aggregators, when it has them in hand (the unsharded path): orders and
  entries applied, commits, and the time each round of apply and commit took;
- Redis, for each shard this process aggregates (or the one stream): the committed
  state's orders and commits (whichever process made them), dead letters, gaps and held
  entries, and the consumer group's lag (entries not yet read) and pending entries (read,
  not yet committed). These are the same whichever process commits, so every aggregator
  of a sharded ticker reports them.
"""

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import ResponseError

from ticker.aggregator import Aggregator
from ticker.keys import GROUP, Keys
from ticker.redis_io import TRANSIENT

log = logging.getLogger(__name__)


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
        for name, field, help_text in (
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
            samples = [(f'{{shard="{s}"}}', v[field]) for s, v in (shards or {}).items()]
            # The shard's totals restart with each run (a counter's reset to Prometheus).
            kind = "counter" if name.endswith("_total") else "gauge"
            out.metric(name, kind, help_text + " (committed, per shard)", samples)
        return out.text()

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
        except TRANSIENT as exc:
            log.debug("metrics: Redis unavailable (%s)", exc)
            return None
        return figures


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


async def serve(metrics: AggregatorMetrics, host: str, port: int) -> web.AppRunner:
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
