"""Malformed orders-stream entries, every one of which the aggregator must dead-letter."""

import random
from collections.abc import Callable

import numpy as np
import orjson

from simulator.generator import DayPlan
from ticker.core.batch import COLUMNS, MAX_ORDER_FEN, encode_end, encode_orders, encode_start
from ticker.core.clock import DAY_MS

Fields = dict[bytes, bytes]


class Fuzzer:
    """Builds genuinely malformed entries from a valid batch and start entry of `run`."""

    def __init__(self, plan: DayPlan, run: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.run = run
        self.meta = orjson.loads(plan.meta().to_json())
        batch = next(plan.batches())
        self.columns = {k: np.asarray(v) for k, v in batch.columns.items()}
        self.t0, self.t1 = batch.t0, batch.t1
        self.cases: list[Callable[[], Fields]] = [
            self.bad_version,
            self.bad_run,
            self.bad_seq,
            self.bad_kind,
            self.bad_start,
            self.bad_end,
            self.bad_shape,
            self.bad_amounts,
            self.bad_times,
            self.unknown_run,
            self.index_out_of_range,
            self.garbage,
        ]

    def entries(self, count: int) -> list[tuple[str, Fields]]:
        out = []
        for i in range(count):
            case = self.cases[i % len(self.cases)]
            out.append((case.__name__, case()))
        return out

    # -- helpers ----------------------------------------------------------------------

    def orders(self, run: str | None = None, seq: int | None = None, **cols: object) -> Fields:
        columns = {k: v.copy() for k, v in self.columns.items()}
        for name, value in cols.items():
            columns[name] = np.asarray(value)
        # A seq far beyond any real batch: no fuzzed entry can pose as a real one.
        seq = seq if seq is not None else 2**61 + self.rng.randrange(2**40)
        return encode_orders(run or self.run, seq, self.t0, self.t1, columns)

    def _with(self, fields: Fields, **changes: bytes | None) -> Fields:
        out = dict(fields)
        for name, value in changes.items():
            if value is None:
                out.pop(name.encode(), None)
            else:
                out[name.encode()] = value
        return out

    # -- cases ------------------------------------------------------------------------

    def bad_version(self) -> Fields:
        v = self.rng.choice([b"2", b"0", b"", b"v1", b"1.0", b"\xff", None])
        return self._with(self.orders(), v=v)

    def bad_run(self) -> Fields:
        run = self.rng.choice([None, b"", b"x" * 65, b"\xff\xfe\xfd", b"r" * 1000])
        return self._with(self.orders(), run=run)

    def bad_seq(self) -> Fields:
        seq = self.rng.choice([None, b"abc", b"-1", b"1.5", b"", b"9" * 30, b"0x10"])
        return self._with(self.orders(), seq=seq)

    def bad_kind(self) -> Fields:
        kind = self.rng.choice([None, b"order", b"", b"START", b"end ", b"\x00"])
        return self._with(self.orders(), kind=kind)

    def bad_start(self) -> Fields:
        meta = dict(self.meta)
        choice = self.rng.randrange(10)
        if choice == 0:
            return self._with(self.start(meta), seq=b"1")  # a start must be seq 0
        if choice == 1:
            return self._with(self.start(meta), meta=None)
        if choice == 2:
            return self._with(self.start(meta), meta=b"{not json")
        if choice == 3:
            return self._with(self.start(meta), meta=b"[]")
        name, value = self.rng.choice(
            [
                ("brands", "many"),
                ("brands", -1),
                ("brands", 2**40),
                ("from_ms", "midnight"),
                ("to_ms", None),
                ("to_ms", DAY_MS + 1),
                ("base_gmv_fen", "1"),
                ("categories", 7),
                ("milestones", [{"id": 1}]),
                ("milestones", "none"),
                ("scale", 0.001),
            ]
        )
        meta[name] = value
        if choice == 4:
            meta["from_ms"], meta["to_ms"] = 5_000, 1_000  # a window running backwards
        return self.start(meta)

    def start(self, meta: dict[str, object]) -> Fields:
        fields = encode_start(self.run, _dummy_meta())
        fields[b"meta"] = orjson.dumps(meta)
        return fields

    def bad_end(self) -> Fields:
        t = self.rng.choice([None, b"-1", str(DAY_MS + 1).encode(), b"noon", b""])
        return self._with(encode_end(self.run, 2**61, 0), t=t)

    def bad_shape(self) -> Fields:
        n = len(self.columns["amt"])
        fields = self.orders()
        choice = self.rng.randrange(8)
        if choice == 0:
            return self._with(fields, n=b"0")
        if choice == 1:  # oversized batch
            return self._with(fields, n=str(self.rng.choice([65_537, 70_000, 2**31])).encode())
        if choice == 2:  # n does not match the columns' bytes
            return self._with(fields, n=str(n + self.rng.choice([-1, 1])).encode())
        if choice == 3:
            name = self.rng.choice(list(COLUMNS))
            return self._with(fields, **{name: None})
        if choice == 4:
            name = self.rng.choice(list(COLUMNS))
            return self._with(fields, **{name: fields[name.encode()][:-1]})
        if choice == 5:
            return self._with(fields, t0=None)
        if choice == 6:
            return self._with(fields, t1=str(self.t0 - 1).encode())  # span runs backwards
        return self._with(fields, n=b"four")

    def bad_amounts(self) -> Fields:
        amt = self.columns["amt"].copy()
        amt[self.rng.randrange(len(amt))] = self.rng.choice(
            [0, -1, -(2**40), MAX_ORDER_FEN + 1, 2**62]
        )
        return self.orders(amt=amt)

    def bad_times(self) -> Fields:
        at = self.columns["at"].copy()
        at[self.rng.randrange(len(at))] = self.rng.choice([self.t1, self.t1 + 5_000, 2**32 - 1])
        return self.orders(at=at)

    def unknown_run(self) -> Fields:
        ghost = f"ghost-{self.rng.randrange(10**6)}"
        if self.rng.random() < 0.2:
            return encode_end(ghost, 5, self.t1)
        return self.orders(run=ghost, seq=self.rng.randrange(1, 50))

    def index_out_of_range(self) -> Fields:
        name, bad = self.rng.choice(
            [
                ("cat", len(self.meta["categories"]) + self.rng.randrange(0, 200)),
                ("cty", 255),
                ("reg", 65_535),
                ("brd", self.meta["brands"] + self.rng.randrange(0, 1000)),
            ]
        )
        column = self.columns[name].copy()
        column[self.rng.randrange(len(column))] = bad
        # Some with a seq the run has already passed: a malformed copy of a real batch.
        seq = self.rng.choice([None, 1, 2])
        return self.orders(seq=seq, **{name: column})

    def garbage(self) -> Fields:
        return {
            bytes([self.rng.randrange(256)]) * self.rng.randrange(1, 4): self.rng.randbytes(
                self.rng.randrange(0, 64)
            )
            for _ in range(self.rng.randrange(1, 6))
        }


def _dummy_meta() -> "object":
    from ticker.core.batch import ReplayMeta

    return ReplayMeta("x", "x", "1", 0, 1, 0, 0, 0, (), (), (), 0, ())
