"""`ticker.producer`: write real orders into the open live run, exactly once.

    async with Producer("redis://127.0.0.1:6379/0", namespace="main") as p:
        await p.add({"id": "A1", "paid_at": "2026-11-27T10:00:00+08:00", "amount": "199.90"})
        ...                      # batches of `batch_size` go out as they fill
    # leaving the block flushes the rest

Each batch is one orders entry of the live run with this producer's id and its next seq
(1, 2, ...). A batch is written by one script that takes seq N only if the producer's last
written seq is N - 1 (the hash `Keys.producers`), so a retry after any failure (a lost
reply, a dropped connection, a Redis restart) resends the same seq and can never count
twice; the aggregator also drops a seq it has applied. A producer id given again (a
restarted process) continues after its last written seq.

Errors: OrderError (a bad order: field and reason; nothing of it is taken), NoLiveRun (no
live run is open, or it ended), ProducerError (Redis refused for good).
"""

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from ticker.core.batch import (
    MAX_NAME_CHARS,
    MAX_ORDER_FEN,
    MAX_ORDERS_PER_BATCH,
    ReplayMeta,
    encode_orders,
)
from ticker.core.clock import DAY_MS
from ticker.core.orders import BATCH_NAMES, COLUMN_OF, Batcher, Order, OrderError, parse_order
from ticker.errors import TickerError
from ticker.keys import Keys
from ticker.redis_io import TRANSIENT, client
from ticker.supervise import Backoff

__all__ = ["NoLiveRun", "Order", "OrderError", "Producer", "ProducerError", "live_run"]

log = logging.getLogger("ticker.producer")

# KEYS: live hash, producers hash, orders stream
# ARGV: run, producer, seq, then the entry's field/value pairs
# Returns 'ok' (written), 'dup' (this seq was written before: a retry), or an error
# (NORUN: the live hash is gone, as when Redis restarted empty: retried until the
# aggregator puts it back, see `ticker.reseed`).
WRITE = """
local live = redis.call('HMGET', KEYS[1], 'run', 'ended')
if not live[1] then return redis.error_reply('NORUN no live run in the namespace') end
if live[1] ~= ARGV[1] then return redis.error_reply('NOLIVE the live run is not ' .. ARGV[1]) end
if live[2] == '1' then return redis.error_reply('NOLIVE the live run ' .. ARGV[1] .. ' ended') end
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local seq = tonumber(ARGV[3])
if seq <= last then return 'dup' end
if seq > last + 1 then
  return redis.error_reply('SEQGAP producer ' .. ARGV[2] .. ' wrote seq ' .. last ..
                           ', not ' .. (seq - 1))
end
redis.call('HSET', KEYS[2], ARGV[2], seq)
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4))
return 'ok'
"""


class NoLiveRun(TickerError):
    """No live run is open in the namespace (start one: `ticker live start`), or it ended."""


class ProducerError(TickerError):
    """Redis refused a batch for a reason a retry cannot cure."""


async def live_run(redis: Any, keys: Keys) -> tuple[str, ReplayMeta]:
    """The open live run of a namespace and its meta; NoLiveRun if there is none."""
    run, meta, ended = await redis.hmget(keys.live, ["run", "meta", "ended"])
    if run is None or meta is None:
        raise NoLiveRun(
            f"no live run in namespace {keys.namespace!r}: start one with "
            f'`ticker live start --title "…" --namespace {keys.namespace}`'
        )
    if ended == b"1":
        raise NoLiveRun(f"the live run {run.decode()} has ended; start a new one")
    return run.decode(), ReplayMeta.from_json(meta)


def _factorize(values: "np.ndarray[Any, Any]") -> tuple[list[str], "np.ndarray[Any, Any]"]:
    """The distinct values in order of first appearance, and each value's index in them."""
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values.ravel().tolist()]
    return list(index), np.array(codes, dtype=np.int64).reshape(values.shape)


def default_producer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"[:64]


class Producer:
    """An async writer of orders into the open live run of a namespace."""

    def __init__(
        self,
        redis_url: str,
        namespace: str = "main",
        producer_id: str | None = None,
        batch_size: int = 4000,
        retry_for: float = 60.0,
        from_start: bool = False,
    ) -> None:
        """`producer_id` (1..64 characters) names this writer's sequence; give the same one
        to continue it after a restart. `retry_for`: seconds a batch is retried while
        Redis is unreachable before ProducerError.

        `from_start`: number batches from 1 again even if this producer id wrote before,
        so that the batches it wrote then are recognised and skipped (`ticker ingest`
        resuming a file: only safe when the same orders make the same batches)."""
        self.redis_url, self.keys = redis_url, Keys(namespace)
        self.producer_id = producer_id or default_producer_id()
        if not 0 < len(self.producer_id) <= 64:
            raise ValueError("producer_id must be 1..64 characters")
        self.batch_size, self.retry_for = batch_size, retry_for
        self.redis: Any = None
        self.run = ""
        self.meta: ReplayMeta | None = None
        self.seq = 0  # the last seq written
        self.from_start = from_start
        self.before = 0  # the last seq this producer id had written when opened
        self.written = 0  # orders written (acknowledged by Redis)
        self.already = 0  # orders of batches found written before (from_start)
        self.gmv_fen = 0
        self.batch: Batcher | None = None

    async def __aenter__(self) -> "Producer":
        await self.open()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                await self.flush()
        finally:
            await self.close()

    async def open(self) -> None:
        """Find the live run and this producer's last written seq."""
        self.redis = client(self.redis_url)
        self._write = self.redis.register_script(WRITE)
        try:
            self.run, self.meta = await live_run(self.redis, self.keys)
            last = await self.redis.hget(self.keys.producers, self.producer_id)
        except BaseException:
            await self.close()
            raise
        self.before = int(last or 0)
        self.seq = 0 if self.from_start else self.before
        self.batch = self._new_batch()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    def _new_batch(self) -> Batcher:
        assert self.meta is not None
        return Batcher(self.meta.countries[0], self.batch_size)

    def parse(self, order: Mapping[str, Any] | Order) -> Order:
        """Validate one order for this live run (OrderError: field and reason)."""
        if isinstance(order, Order):
            return order
        assert self.meta is not None, "open the producer first"
        return parse_order(order, self.meta.origin_ms, self.meta.utc_offset_minutes)

    async def add(self, order: Mapping[str, Any] | Order) -> None:
        """Take one order (validated first: a bad one raises OrderError, taking nothing);
        a full batch is written before this returns."""
        parsed = self.parse(order)
        assert self.batch is not None
        if not self.batch.fits(parsed):
            await self.flush()
        self.batch.add(parsed)
        if len(self.batch) >= self.batch_size:
            await self.flush()

    async def add_many(self, orders: list[Mapping[str, Any]] | list[Order]) -> None:
        for order in orders:
            await self.add(order)

    async def add_columns(
        self,
        paid_at_ms: "npt.ArrayLike",
        amount_fen: "npt.ArrayLike",
        **names: "npt.ArrayLike | None",
    ) -> None:
        """Take orders already held as columns, the fast way (millions a second): Unix ms
        and integer fen (int64 arrays), and optional name columns `category`,
        `seller_country`, `buyer_region`, `brand` (arrays of strings). Checked as a whole
        first (OrderError names the field and the first bad row, `line` = row + 1);
        written in batches of `batch_size`."""
        assert self.meta is not None, "open the producer first"
        at = np.asarray(paid_at_ms)
        amt = np.asarray(amount_fen)
        for name, col in (("paid_at", at), ("amount", amt)):
            if col.dtype.kind not in "iu":
                raise OrderError(name, f"must be an integer column, not {col.dtype}")
        if at.shape != amt.shape or at.ndim != 1:
            raise OrderError("amount", "paid_at and amount must be columns of one length")
        at = at.astype(np.int64) - self.meta.origin_ms
        for name, bad, reason in (
            ("paid_at", (at < 0) | (at >= DAY_MS), "outside the event's day"),
            ("amount", (amt < 1) | (amt > MAX_ORDER_FEN), f"must be 1..{MAX_ORDER_FEN:,} fen"),
        ):
            if bad.any():
                row = int(np.argmax(bad))
                raise OrderError(name, reason, row + 1)
        # Each name column as codes into its distinct names (a dict pass: sorting a
        # million strings, as np.unique does, costs ten times more).
        named: dict[str, tuple[list[str], np.ndarray[Any, Any]]] = {}
        for key, column in COLUMN_OF.items():
            values = names.get(key)
            if values is not None:
                distinct, codes = _factorize(np.asarray(values, dtype=str))
                if codes.shape != at.shape:
                    raise OrderError(key, "must be a column as long as paid_at")
                wrong = [i for i, n in enumerate(distinct) if not 0 < len(n) <= MAX_NAME_CHARS]
                if wrong:
                    row = int(np.argmax(np.isin(codes, wrong)))
                    raise OrderError(key, f"names are 1..{MAX_NAME_CHARS} characters", row + 1)
                named[column] = distinct, codes
        await self.flush()
        step = min(self.batch_size, MAX_ORDERS_PER_BATCH)
        for lo in range(0, len(at), step):
            part = slice(lo, lo + step)
            cols = {"at": at[part], "amt": amt[part]}
            batch_names = {}
            for column in COLUMN_OF.values():
                if column not in named:
                    default = self.meta.countries[0] if column == "cty" else "Other"
                    cols[column] = np.zeros(len(cols["at"]), dtype=np.int64)
                    batch_names[column] = [default]
                    continue
                distinct, codes = named[column]
                unique, index = np.unique(codes[part], return_inverse=True)
                if len(unique) > BATCH_NAMES[column]:
                    key = next(k for k, c in COLUMN_OF.items() if c == column)
                    raise OrderError(
                        key,
                        f"more than {BATCH_NAMES[column]} names in rows {lo + 1}..{lo + step} "
                        "(one batch's limit): use a smaller batch_size",
                    )
                cols[column] = index.astype(np.int64)
                batch_names[column] = [distinct[i] for i in unique.tolist()]
            seq = self.seq + 1
            t0, t1 = int(cols["at"].min()), int(cols["at"].max()) + 1
            fields = encode_orders(self.run, seq, t0, t1, cols, self.producer_id, batch_names)
            await self._send(seq, fields)
            self.seq = seq
            self.written += len(cols["amt"])
            self.gmv_fen += int(cols["amt"].sum())

    async def flush(self) -> None:
        """Write the orders gathered so far (nothing if there are none)."""
        assert self.batch is not None
        if not len(self.batch):
            return
        batch, self.batch = self.batch, self._new_batch()
        seq = self.seq + 1
        fields = batch.fields(self.run, self.producer_id, seq)
        if not await self._send(seq, fields):
            self.already += len(batch)
        self.seq = seq
        self.written += len(batch)
        self.gmv_fen += sum(batch.amt)

    async def _send(self, seq: int, fields: dict[bytes, bytes]) -> bool:
        """Write one batch, retrying the same seq until Redis says it has it; False if
        it had it before this call (written by an earlier run of this producer id)."""
        args: list[Any] = [self.run, self.producer_id, seq]
        for k, v in fields.items():
            args += [k, v]
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_for
        backoff, attempt = Backoff(first=0.05, cap=2.0), 0
        while True:
            attempt += 1
            try:
                keys = [self.keys.live, self.keys.producers, self.keys.orders]
                reply = await self._write(keys=keys, args=args)
                return not (reply == b"dup" and attempt == 1)
            except TRANSIENT as exc:
                if loop.time() > give_up:
                    raise ProducerError(
                        f"batch {seq} not written: Redis unreachable for {self.retry_for:.0f}s "
                        f"({exc}); retrying later with the same producer id is safe"
                    ) from None
                log.warning("writing batch %d: %s; retrying", seq, exc)
                await backoff.sleep()
            except Exception as exc:
                text = str(exc)
                if text.startswith("NORUN") and loop.time() <= give_up:
                    log.warning(
                        "writing batch %d: %s (Redis restarted empty?); retrying", seq, text
                    )
                    await backoff.sleep()
                    continue
                if text.startswith("NOLIVE") or text.startswith("NORUN"):
                    raise NoLiveRun(text.split(" ", 1)[1]) from None
                raise ProducerError(f"batch {seq} refused: {text}") from None
