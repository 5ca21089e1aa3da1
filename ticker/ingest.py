"""`ticker ingest FILE`: a shop's exported orders into the open live run, at any speed.

NDJSON (one JSON object an order) or CSV (a header line, one order a line; `--map
field=column` names the columns holding `id`, `paid_at`, `amount`, ...). At `--speed N`
an order is written when N times the wall time since the first order has passed its
paid-at distance from the first; `--speed max` writes as fast as Redis takes it. Built on
`ticker.producer`: a batch retried after a failure counts once, and the same command run
again (same file, same options: the producer id is derived from them unless `--producer`
names one) skips the batches an interrupted run wrote and goes on from there. A bad line
is reported (line, field, reason) and skipped; the exit code is then 1.
"""

import argparse
import asyncio
import csv
import hashlib
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
) -> tuple[int, int, int]:
    """Write the file's orders; (orders written, orders an earlier run had written, bad
    lines)."""
    bad = 0
    producer_id = producer_id or default_id(path, fmt, mapping, speed, batch_size)
    async with Producer(
        settings.redis_url, settings.keys.namespace, producer_id, batch_size, from_start=True
    ) as producer:
        assert producer.meta is not None
        bar = Bar(path.stat().st_size, producer.meta.currency, not quiet)
        first = 0
        started = time.monotonic()
        at = 0
        # At --speed, a batch is cut when an order comes PACE_MS of wall time after the
        # batch's first (so the screen moves), and waits until its first order is due:
        # the batches depend on the file and the options alone, so that a run resumed
        # with the same ones finds the batches it wrote before (and skips their waits).
        window = speed * PACE_MS if speed is not None else None
        fresh = True  # no batch waited for yet: the pace starts at the next one
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
                assert producer.batch is not None
                if speed is not None and window is not None:
                    if len(producer.batch) and at - producer.batch.at[0] >= window:
                        await producer.flush()
                    if not len(producer.batch):
                        if fresh or producer.seq < producer.before:
                            first, started = at, time.monotonic()  # written before: no wait
                            fresh = producer.seq < producer.before
                        wait = (at - first) / speed / 1000 - (time.monotonic() - started)
                        if wait > 0:
                            await asyncio.sleep(wait)
                await producer.add(order)
                bar.show(stream.tell(), producer, at)
            await producer.flush()
            bar.show(stream.tell(), producer, at, final=True)
        return producer.written - producer.already, producer.already, bad


PACE_MS = 100


def default_id(
    path: Path, fmt: str, mapping: dict[str, str], speed: float | None, batch_size: int
) -> str:
    """The producer id of an ingest: the same file with the same options gets the same
    one (and so resumes where an interrupted run stopped), anything else a new one."""
    digest = hashlib.sha256(f"{fmt} {sorted(mapping.items())} {speed} {batch_size}".encode())
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"ingest-{digest.hexdigest()[:24]}"


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
    written, already, bad = asyncio.run(
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
    earlier = f" ({already:,} more were written by an earlier run)" if already else ""
    skipped = f", {bad} bad lines skipped" if bad else ""
    print(f"ingest: {written:,} orders written{earlier}{skipped}")
    return 1 if bad else 0
