"""`ticker bench`: the pipeline against the real festival, the naive design and the machine.

Sub-benchmarks: `pipeline` (end-to-end orders/s, and the naive design in the same run),
`day` (the whole 2018 day at full scale, exact totals, memory), `latency` (batch written to
websocket client, at 1x through the midnight peak), `scaling` (throughput against batch
size, latency against the number of clients) and `all`; besides these, `fanout`, `recovery`,
`ingest` (real orders into a live run: the Python producer and HTTP NDJSON) and `page` (the
web page's main-thread busy share in headless Chromium). Each prints a table, or with
`--json` one JSON object. `--quick` shrinks every window to a few seconds (for CI). Nothing
here asserts a speed: the targets are reported, met or not.
"""

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from ticker.bench.common import bench_redis, code_version, load_average, machine, redis_version
from ticker.core.clock import DAY_MS, parse_time_of_day

BENCHES = ("pipeline", "day", "latency", "scaling")


def _time(text: str) -> int:
    try:
        return parse_time_of_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers") from None


def _peers(text: str) -> list[str]:
    from ticker.bench.fanout import parse_peers

    return parse_peers(text)


def register(sub: Any, add_redis: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("bench", help="benchmark the pipeline, the whole day, latency, scaling")
    bsub = p.add_subparsers(dest="bench", required=True)
    helps = {
        "pipeline": "end-to-end orders/s of the real pipeline and of the naive design",
        "day": "the whole 2018 day at full scale: wall time, memory, exact totals",
        "latency": "batch written -> websocket client, at 1x through the midnight peak",
        "scaling": "throughput against batch size; latency against websocket clients",
        "all": "every benchmark above, one after another",
        "fanout": "1k-10k websocket clients of the ticker, nginx+nchan and websockets.broadcast: "
        "delivered, latency, CPU per message, memory per idle client",
        "recovery": "kill -9 the aggregator at the midnight peak: seconds until caught up",
        "page": "the web page's main-thread busy share in headless Chromium, at 1x and 1200x",
        "ingest": "real orders into a live run: the Python producer and HTTP NDJSON, exact",
    }
    for name, text in helps.items():
        q = bsub.add_parser(name, help=text, description=text)
        q.add_argument("--quick", action="store_true", help="tiny windows: seconds, for CI")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument(
            "--window-to",
            "--to",
            dest="window_to",
            type=_time,
            metavar="HH:MM[:SS]",
            help="end of the replayed window (pipeline: 00:01:00; day: 24:00; scaling: 00:00:20)",
        )
        q.add_argument(
            "--scale", type=Fraction, help="day only: scale of the day (default 1; quick 0.001)"
        )
        q.add_argument("--batch-size", type=int, default=4000)
        q.add_argument(
            "--naive-seconds", type=float, help="how long the naive pipeline runs (default 10)"
        )
        q.add_argument(
            "--naive-pipeline",
            type=int,
            default=1,
            help="naive design: commands per round trip (default 1, the tutorial)",
        )
        q.add_argument(
            "--duration",
            type=float,
            help="latency: simulated seconds from 00:00 replayed at 1x (default 60)",
        )
        q.add_argument(
            "--max-wall",
            type=float,
            help="day: stop the replay after this many seconds and report the partial window",
        )
        q.add_argument("--clients", type=int, default=1, help="latency: websocket clients")
        q.add_argument(
            "--batch-sizes", type=_ints, help="scaling: batch sizes (default 250,1000,4000,16000)"
        )
        q.add_argument(
            "--client-counts", type=_ints, help="scaling: websocket clients (default 1,100,1000)"
        )
        if name == "page":
            q.add_argument("--speeds", type=_floats, help="page: replay speeds (default 1,1200)")
            q.add_argument(
                "--hidden", action="store_true", help="page: also measure with the tab hidden"
            )
            q.add_argument(
                "--profile",
                metavar="PREFIX",
                help="page: save a CPU profile of each window to PREFIX-<speed>x.cpuprofile",
            )
        q.add_argument(
            "--orders",
            type=int,
            help="ingest: orders each way in (default 4,000,000 producer, 500,000 HTTP; "
            "quick 20,000)",
        )
        if name == "fanout":
            q.add_argument(
                "--peers",
                type=_peers,
                help="fanout: servers compared (default ticker,nchan,websockets; nchan "
                "needs `apt-get install -y libnginx-mod-nchan`, else it is skipped)",
            )
            q.add_argument(
                "--rates", type=_floats, help="fanout: messages per second (default 10,5)"
            )
            q.add_argument(
                "--delta",
                action="store_true",
                help="fanout: the ticker again, its clients subscribing with delta: true",
            )
        add_redis(q)
        q.set_defaults(handler=main)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so every child process and the private Redis are stopped


def main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    names = BENCHES if args.bench == "all" else (args.bench,)
    with bench_redis(args.redis_url) as url:
        out: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "code": code_version(),
            "redis": redis_version(url),
            "redis_private": not args.redis_url,
            "quick": args.quick,
            "load_average_before": load_average(),
        }
        for name in names:
            started = time.monotonic()
            result = RUNNERS[name](url, args)
            result["bench_seconds"] = round(time.monotonic() - started, 1)
            result["load_average_after"] = load_average()
            out[name] = result
            if not args.json:
                _print_table(name, result)
        out["ok"] = all(out[n].get("exact", True) is not False for n in names)
    if args.json:
        print(json.dumps(out, default=str))
    return 0 if out["ok"] else 1


def _pipeline(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.pipeline import run_generator, run_naive, run_real

    to = args.window_to or (2_000 if args.quick else 60_000)
    naive_s = args.naive_seconds or (1.5 if args.quick else 10.0)
    real = run_real(url, Fraction(1), 0, to, args.batch_size, args.seed)
    generator = run_generator(Fraction(1), 0, to, args.batch_size, args.seed)
    naive = run_naive(url, naive_s, args.naive_pipeline)
    # Sustained: between the aggregator's first and last commit seen by the 0.5 s sampler,
    # so the replay's start-up (imports, planning) is left out; else launch to exit.
    rate = real["sustained_orders_per_s"] or real["orders_per_s"]
    ratio = rate / max(1, naive["orders_per_s"])
    return {
        "real": real,
        "naive": naive,
        "generator": generator,
        "ratio_to_generator_alone": round(rate / max(1, generator["orders_per_cpu_s"]), 2),
        "ratio": round(ratio, 1),
        "exact": real["exact"] and naive["exact"],
        "targets": [
            _target("end-to-end orders/s (sustained)", ">= 4,000,000", rate, 4_000_000),
            _target("real / naive", ">= 100x", round(ratio, 1), 100),
        ],
    }


def _day(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.pipeline import run_real

    scale = args.scale or (Fraction(1, 1000) if args.quick else Fraction(1))
    # A miniature day: 1 s slots, coalesced into ~1 entry a minute; quick mode takes 2 hours.
    to = args.window_to or (7_200_000 if args.quick else DAY_MS)
    r = run_real(url, scale, 0, to, args.batch_size, args.seed, label="day", max_wall=args.max_wall)
    whole = to == DAY_MS and r["partial"] is None
    mem = r["redis_used_memory_peak_info_mb"]
    r["whole_day"] = whole
    r["targets"] = [
        _target("whole day wall time (s)", "<= 300", r["wall_s"], 300, lower=True)
        if whole and scale == 1
        else _target("window wall time (s), not the whole day", "n/a", r["wall_s"], None),
        _target("Redis used_memory_peak (MB)", "<= 512", mem, 512, lower=True),
    ]
    if r["partial"] is not None and scale == 1 and r["orders_per_s"]:
        r["extrapolated_whole_day_s"] = round(1_042_000_000 / r["orders_per_s"])
    if whole and scale == 1:
        r["expected_documented"] = {"gmv_fen": 21_350_000_000_000, "orders": 1_042_000_000}
        r["exact"] = (
            r["exact"] and r["gmv_fen"] == 21_350_000_000_000 and r["orders_total"] == 1_042_000_000
        )
    return r


def _latency(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.latency import run_latency

    duration = args.duration or (3.0 if args.quick else 60.0)
    r = run_latency(url, duration, args.clients, args.batch_size, args.seed)
    r["targets"] = [
        _target("p99 write -> client (ms)", "<= 50", r["write_to_client_ms"]["p99"], 50, True),
        _target("p99 feed -> client (ms)", "<= 20", r["feed_to_client_ms"]["p99"], 20, True),
    ]
    return r


def _scaling(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.pipeline import run_real

    sizes = args.batch_sizes or ([1000, 4000] if args.quick else [250, 1000, 4000, 16000])
    to = args.window_to or (1_000 if args.quick else 20_000)
    rows = []
    for size in sizes:
        r = run_real(url, Fraction(1), 0, to, size, args.seed, label=f"b{size}")
        rows.append(
            {
                "batch_size": size,
                "orders": r["orders"],
                "wall_s": r["wall_s"],
                "orders_per_s": r["orders_per_s"],
                "sustained_orders_per_s": r["sustained_orders_per_s"],
                "exact": r["exact"],
                "command": r["command"],
            }
        )
    out: dict[str, Any] = {"by_batch_size": rows, "exact": all(r["exact"] for r in rows)}
    counts = args.client_counts or ([1, 10] if args.quick else [1, 100, 1000])
    from ticker.bench.latency import run_latency

    duration = args.duration or (3.0 if args.quick else 20.0)
    lat_rows = []
    for n in counts:
        try:
            r = run_latency(url, duration, n, args.batch_size, args.seed)
        except Exception as exc:  # one failed row must not lose the others
            lat_rows.append({"clients": n, "error": repr(exc)[-500:], "exact": False})
            continue
        lat_rows.append(
            {
                "clients": n,
                "write_to_client_ms": r["write_to_client_ms"],
                "feed_to_client_ms": r["feed_to_client_ms"],
                "batches": r["batches"],
                "exact": r["exact"],
                "command": r["command"],
            }
        )
    out["latency_by_clients"] = lat_rows
    out["exact"] = out["exact"] and all(r["exact"] for r in lat_rows)
    return out


def _fanout(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.fanout import run_fanout

    counts = args.client_counts or ([50, 200] if args.quick else [1000, 5000, 10000])
    seconds = args.duration or (2.0 if args.quick else 10.0)
    rates = args.rates or [10.0, 5.0]
    return run_fanout(url, counts, rates, seconds, [], peers=args.peers, delta=args.delta)


def _recovery(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.recovery import run_recovery

    if args.quick:
        return run_recovery(url, args.window_to or 8_000, "max", (2.0,), args.batch_size)
    return run_recovery(url, args.window_to or 90_000, "1", (10.0, 35.0, 60.0), args.batch_size)


def _page(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.page import run_page

    window = args.duration or (4.0 if args.quick else 30.0)
    speeds = args.speeds or [1.0, 1200.0]
    scale_1x = str(args.scale) if args.scale else "1"
    scale_fast = str(args.scale) if args.scale else "1/1000"
    r = run_page(url, speeds, window, args.hidden, scale_1x, scale_fast, args.profile)
    targets = {1.0: 0.10, 1200.0: 0.20}
    r["targets"] = [
        _target(
            f"main thread busy at {row['speed']:g}x",
            f"<= {targets[row['speed']]:.0%}",
            row["main_thread_busy"],
            targets[row["speed"]],
            lower=True,
        )
        for row in r["rows"]
        if row["speed"] in targets and not row["hidden"]
    ]
    return r


def _ingest(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ticker.bench.ingest import run_http, run_producer

    quick = 20_000 if args.quick else None
    producer = run_producer(url, args.orders or quick or 4_000_000, seed=args.seed)
    http = run_http(url, args.orders or quick or 500_000, seed=args.seed)
    return {
        "producer": producer,
        "http": http,
        "exact": producer["exact"] and http["exact"],
        "targets": [
            _target(
                "Python producer end to end (orders/s)",
                ">= 1,000,000",
                producer["orders_per_s"],
                1_000_000,
            ),
            _target("HTTP NDJSON end to end (orders/s)", ">= 50,000", http["orders_per_s"], 50_000),
        ],
    }


RUNNERS: dict[str, Callable[[str, argparse.Namespace], dict[str, Any]]] = {
    "recovery": _recovery,
    "page": _page,
    "ingest": _ingest,
    "fanout": _fanout,
    "pipeline": _pipeline,
    "day": _day,
    "latency": _latency,
    "scaling": _scaling,
}


def _target(
    name: str, goal: str, value: float | None, bound: float | None, lower: bool = False
) -> dict[str, Any]:
    met = None
    if value is not None and bound is not None:
        met = value <= bound if lower else value >= bound
    return {"what": name, "target": goal, "value": value, "met": met}


# -- tables ---------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".")
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _rows(title: str, rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n== {title}")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {_fmt(v)}")


def _flat(prefix: str, d: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(f"{prefix}{k}", v) for k, v in d.items() if not isinstance(v, list)]


def _print_table(name: str, r: dict[str, Any]) -> None:
    if name == "pipeline":
        _rows("pipeline: real (simulator -> Redis -> aggregator -> feed)", _flat("", r["real"]))
        _rows("pipeline: naive (XADD per order; HINCRBY + XACK per order)", _flat("", r["naive"]))
        _rows("pipeline: generator alone (one core)", _flat("", r["generator"]))
        _rows(
            "pipeline: ratios",
            [
                ("real / naive orders/s", r["ratio"]),
                ("real / generator alone", r["ratio_to_generator_alone"]),
            ],
        )
    elif name == "scaling":
        print("\n== scaling: throughput against --batch-size")
        print(f"  {'batch':>7} {'orders':>12} {'wall s':>8} {'orders/s':>12} exact")
        for row in r["by_batch_size"]:
            print(
                f"  {row['batch_size']:>7,} {row['orders']:>12,} {row['wall_s']:>8.2f} "
                f"{row['orders_per_s']:>12,} {row['exact']}"
            )
        print("\n== scaling: latency against websocket clients (ms, write -> client)")
        print(f"  {'clients':>7} {'p50':>8} {'p99':>8} {'max':>8}  feed->client p50/p99")
        for row in r["latency_by_clients"]:
            if "error" in row:
                print(f"  {row['clients']:>7,} error: {row['error']}")
                continue
            w, f = row["write_to_client_ms"], row["feed_to_client_ms"]
            print(
                f"  {row['clients']:>7,} {w['p50']:>8} {w['p99']:>8} {w['max']:>8}  "
                f"{f['p50']}/{f['p99']}"
            )
    elif name == "page":
        from ticker.bench.page import print_table as print_page

        print_page(r)
    elif name == "ingest":
        _rows("ingest: Python producer -> Redis -> aggregator", _flat("", r["producer"]))
        _rows("ingest: HTTP NDJSON -> server -> Redis -> aggregator", _flat("", r["http"]))
    elif name == "fanout":
        from ticker.bench.fanout import print_table

        print_table(r)
        return
    else:
        _rows(name, _flat("", r))
    for t in r.get("targets", []):
        mark = {True: "met", False: "NOT met", None: "-"}[t["met"]]
        print(f"  target {t['what']}: {t['target']} -> {_fmt(t['value'])} ({mark})")
    sys.stdout.flush()


__all__ = ["main", "register"]
