"""`ticker ingest FILE`: a shop's exported orders into the open live run, at any speed.

NDJSON (one JSON object an order) or CSV (a header line, one order a line; `--map
field=column` names the columns holding `id`, `paid_at`, `amount`, ...). At `--speed N`
an order is written when N times the wall time since the first order has passed its
paid-at distance from the first; `--speed max` writes as fast as Redis takes it. Built on
`ticker.producer`: re-running with the same `--producer` continues its sequence, and a
batch retried after a failure counts once. A bad line is reported (line, field, reason)
and skipped; the exit code is then 1.
"""

import argparse
import asyncio
import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ticker.core.clock import format_time_of_day
from ticker.core.orders import OPTIONAL, OrderError
from ticker.errors import UsageError
from ticker.producer import Producer
from ticker.settings import Settings

FIELDS = ("id", "paid_at", "amount", *OPTIONAL)


def parse_map(items: list[str]) -> dict[str, str]:
    """`field=column` pairs: which CSV column holds each order field."""
    out = {}
    for item in items:
        name, sep, column = item.partition("=")
        if not sep or name not in FIELDS or not column:
            raise UsageError(
                f"--map {item!r}: use FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}"
            )
        out[name] = column
    return out


def read_orders(
    stream: IO[bytes], fmt: str, mapping: dict[str, str]
) -> Iterator[tuple[int, dict[str, Any] | OrderError]]:
    """(line number, order object or the reason the line is unreadable), line by line."""
    header: list[str] | None = None
    for number, raw in enumerate(stream, 1):
        line = raw.strip()
        if not line:
            continue
        if fmt == "ndjson":
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, OrderError("line", f"not JSON ({exc})", number)
            continue
        try:
            cells = next(csv.reader([line.decode()]))
        except UnicodeDecodeError:
            yield number, OrderError("line", "not UTF-8", number)
            continue
        if header is None:
            header = cells
            missing = [c for c in (mapping.get(f, f) for f in FIELDS[:3]) if c not in header]
            if missing:
                raise UsageError(
                    f"the CSV header has no column {', '.join(map(repr, missing))}: "
                    "name the columns with --map id=… --map paid_at=… --map amount=…"
                )
            continue
        row = dict(zip(header, cells, strict=False))
        yield number, {f: row.get(mapping.get(f, f)) for f in FIELDS}


class Bar:
    """A progress line on stderr: share of the file read, orders, money, rate, clock."""

    def __init__(self, size: int, currency: str, enabled: bool) -> None:
        self.size, self.currency, self.enabled = max(size, 1), currency, enabled
        self.started = self.last = time.monotonic()

    def show(self, done_bytes: int, p: Producer, at_ms: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.2):
            return
        self.last = now
        share = min(done_bytes / self.size, 1.0)
        bar = "#" * int(share * 24) + "-" * (24 - int(share * 24))
        rate = p.written / max(now - self.started, 1e-6)
        print(
            f"\r[{bar}] {share:4.0%}  {p.written:,} orders  {self.currency} "
            f"{p.gmv_fen / 100:,.2f}  {rate:,.0f}/s  at {format_time_of_day(at_ms, millis=False)}",
            end="\n" if final else "",
            file=sys.stderr,
            flush=True,
        )


async def ingest(
    settings: Settings,
    path: Path,
    fmt: str,
    mapping: dict[str, str],
    speed: float | None,
    producer_id: str | None,
    batch_size: int,
    quiet: bool,
) -> tuple[int, int]:
    """Write the file's orders; (orders written, bad lines)."""
    bad = 0
    async with Producer(
        settings.redis_url, settings.keys.namespace, producer_id, batch_size
    ) as producer:
        assert producer.meta is not None
        bar = Bar(path.stat().st_size, producer.meta.currency, not quiet)
        first: int | None = None
        started = time.monotonic()
        at = 0
        with path.open("rb") as stream:
            for number, item in read_orders(stream, fmt, mapping):
                try:
                    if isinstance(item, OrderError):
                        raise item
                    order = producer.parse(item)
                except OrderError as exc:
                    bad += 1
                    print(f"\n{path.name}: {exc.at_line(number)}", file=sys.stderr)
                    continue
                at = order.at
                if speed is not None:
                    first = at if first is None else first
                    wait = (at - first) / speed / 1000 - (time.monotonic() - started)
                    if wait > 0:
                        await producer.flush()  # what is due is on screen while we wait
                        await asyncio.sleep(wait)
                await producer.add(order)
                bar.show(stream.tell(), producer, at)
            await producer.flush()
            bar.show(stream.tell(), producer, at, final=True)
        return producer.written, bad


def register(sub: "argparse._SubParsersAction[Any]", add_redis: Any) -> None:
    p = sub.add_parser("ingest", help="write a file of orders (NDJSON or CSV) into the live run")
    p.add_argument("file", help="orders, one a line: NDJSON, or CSV with a header")
    p.add_argument("--format", choices=("auto", "ndjson", "csv"), default="auto")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="the CSV column of an order field (id, paid_at, amount, category, "
        "seller_country, buyer_region, brand); default: the field's own name",
    )
    p.add_argument("--speed", default="max", help="times real time by paid-at, or max (default)")
    p.add_argument("--producer", help="producer id (give it again to continue its sequence)")
    p.add_argument("--batch-size", type=int, default=4000, help="orders per stream entry")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_redis(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file}: no such file")
    fmt = args.format
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "ndjson"
    speed: float | None = None
    if args.speed != "max":
        try:
            speed = float(args.speed)
        except ValueError:
            speed = 0
        if not speed or speed <= 0:
            raise UsageError(f"--speed {args.speed!r}: a positive number, or max")
    if not 1 <= args.batch_size <= 65_536:
        raise UsageError("--batch-size must be 1..65536")
    settings = Settings.from_env(args.redis_url, args.namespace)
    written, bad = asyncio.run(
        ingest(
            settings,
            path,
            fmt,
            parse_map(args.map),
            speed,
            args.producer,
            args.batch_size,
            args.quiet,
        )
    )
    print(f"ingest: {written:,} orders written" + (f", {bad} bad lines skipped" if bad else ""))
    return 1 if bad else 0
