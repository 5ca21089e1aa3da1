"""The `ticker` command line: replay, aggregate, serve, demo."""

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, NoReturn

from ticker.core.batch import MAX_SHARDS
from ticker.core.clock import DAY_MS, format_time_of_day, parse_time_of_day
from ticker.errors import TickerError, UsageError
from ticker.ports import port_arg
from ticker.settings import Settings

# After Ctrl-C, a replay that has not stopped cleanly within this long exits anyway.
STOP_GRACE_S = 5.0

if TYPE_CHECKING:
    from simulator.replay import Replay
    from ticker.aggregator import Aggregator
    from ticker.guard import Policy


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line saying what is wrong (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; use e.g. 60 or max") from None
    if not 0 < value <= 1_000_000:
        raise argparse.ArgumentTypeError(
            f"{text} must be above 0 (e.g. 1 for real time, 60, or max)"
        )
    return value


def _time(text: str) -> int:
    try:
        return parse_time_of_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def scale_arg(text: str) -> Fraction:
    """An argparse type for --scale (also used by extensions such as `profile check`)."""
    from simulator.generator import parse_scale

    try:
        return parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_redis(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url", help="Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379/0)"
    )
    p.add_argument(
        "--namespace", help="ticker namespace in Redis (default: $TICKER_NAMESPACE or main)"
    )


def _shards(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"must be a whole number 1..{MAX_SHARDS}, got {text!r}")
    return value


def _add_shards(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards",
        type=_shards,
        default=_shards(os.environ.get("TICKER_SHARDS", "1")),
        help="spread the orders over this many streams (hash tags spread them over a "
        "Redis Cluster); the replay and every aggregator need the same number "
        "(default: $TICKER_SHARDS or 1)",
    )


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ingest-token",
        help="token for POST /api/orders into the open live run (default: "
        "$TICKER_INGEST_TOKEN; without one, the endpoint is not mounted)",
    )
    p.add_argument(
        "--control-token",
        help="token for POST /api/replay (default: "
        "$TICKER_CONTROL_TOKEN; without one, replay control is refused)",
    )
    p.add_argument(
        "--feed-token",
        help="make the feed private: /ws and /api/state need "
        "this token (default: $TICKER_FEED_TOKEN; none = public)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed besides the server's own, e.g. "
        "https://wall.example.com (repeatable; $TICKER_ALLOWED_ORIGINS)",
    )
    p.add_argument(
        "--max-clients", type=int, help="websocket connections at most (default 20000; 503 beyond)"
    )
    p.add_argument(
        "--max-connects-per-ip",
        type=float,
        help="new websocket connections per second per address (default 20; 429 beyond)",
    )
    p.add_argument(
        "--public-origin",
        action="append",
        metavar="ORIGIN",
        help="the origin people open the page at, e.g. https://ticker.example.com "
        "(repeatable; $TICKER_PUBLIC_ORIGINS; default: the address the server is reached on)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="a proxy whose X-Forwarded-For is believed for per-address limits: an address "
        "or network like 10.0.0.0/8 (repeatable; $TICKER_TRUSTED_PROXIES)",
    )
    p.add_argument(
        "--metrics-token",
        help="token for /metrics (default: $TICKER_METRICS_TOKEN; else the feed token "
        "when the feed is private)",
    )


def _policy(args: argparse.Namespace) -> "Policy":
    from ticker.guard import Policy, parse_networks

    try:
        proxies = parse_networks(args.trusted_proxy) if args.trusted_proxy else None
        return Policy.from_env(
            control_token=args.control_token,
            feed_token=args.feed_token,
            metrics_token=args.metrics_token,
            public_origins=frozenset(args.public_origin) if args.public_origin else None,
            allowed_origins=frozenset(args.allow_origin) if args.allow_origin else None,
            trusted_proxies=proxies,
            max_clients=args.max_clients,
            connects_per_ip_per_s=args.max_connects_per_ip,
        )
    except ValueError as exc:  # a bad --trusted-proxy or $TICKER_TRUSTED_PROXIES
        raise UsageError(str(exc)) from None


def _add_metrics(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=port_arg,
        help="serve Prometheus metrics at http://<metrics-host>:<port>/metrics",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", help="default 127.0.0.1")


def _add_replay_options(p: argparse.ArgumentParser, speed: str) -> None:
    p.add_argument(
        "--profile",
        default="2018",
        help="festival profile: a bundled name (2018) or a path to a .toml file (default 2018)",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=_speed(speed),
        metavar="X|max",
        help=f"simulated seconds per wall second, or max (default {speed})",
    )
    p.add_argument(
        "--scale",
        type=scale_arg,
        default=Fraction(1),
        help="shrink the day: orders, GMV and thresholds times this factor, e.g. 0.001 (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--from",
        dest="from_ms",
        type=_time,
        default=0,
        metavar="HH:MM[:SS]",
        help="start of the replayed window (default 00:00)",
    )
    p.add_argument(
        "--to",
        dest="to_ms",
        type=_time,
        default=DAY_MS,
        metavar="HH:MM[:SS]",
        help="end of the replayed window (default 24:00)",
    )


# Modules that add a subcommand, by its name: each has `register(sub, add_redis)`, which
# adds its parser and sets `handler` (a function of the parsed args returning the exit code).
EXTENSIONS: dict[str, str] = {
    "bench": "ticker.bench",
    "watch": "ticker.watch",
    "profile": "ticker.profile_check",
    "verify": "ticker.verify",
    "control": "ticker.control",
    "live": "ticker.live",
    "ingest": "ticker.ingest",
}
COMMANDS = ("replay", "aggregate", "serve", "demo", *EXTENSIONS)


def command_of(argv: Sequence[str]) -> str | None:
    """The command `argv` runs, if it names one (else None: a help or a usage error)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `only`, of that command alone: a run imports no other
    command's modules (the demo's and the extensions' take ~0.1 s, a tenth of a 1/1000
    day's replay)."""
    parser = _Parser(prog="ticker", description="A live sales ticker for a festival day.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("replay", help="replay a festival day into the orders stream")
    _add_replay_options(p, speed="60")
    p.add_argument("--run", help="run id; give the id of an interrupted run to resume it")
    p.add_argument("--batch-size", type=int, default=4000, help="orders per stream entry")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_metrics(p)
    _add_shards(p)
    _add_redis(p)

    p = sub.add_parser("aggregate", help="aggregate orders into totals, milestones and the feed")
    p.add_argument(
        "--burst",
        action="store_true",
        help="exit once the replay has ended and every entry is applied",
    )
    p.add_argument(
        "--name",
        help=(
            "consumer name in the group (default: unique per process, <host>-<pid>-<random>;"
            " with --shards, <host>-<pid>)"
        ),
    )
    _add_metrics(p)
    _add_shards(p)
    _add_redis(p)

    p = sub.add_parser("serve", help="serve the page, the websocket feed and the API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_arg, default=8080, help="default 8080")
    # A listening socket inherited from `ticker demo`, which binds the port itself.
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    _add_server_options(p)
    _add_redis(p)

    if only in (None, "demo"):
        from ticker.demo import add_options

        p = sub.add_parser(
            "demo",
            help="run everything for one person: Redis (embedded if "
            "needed), a replay, the aggregator and the server",
        )
        _add_replay_options(p, speed="1")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=port_arg, default=8080, help="default 8080")
        p.add_argument("--redis-url", help="use this Redis instead of an embedded one")
        add_options(p)

    for command, module in EXTENSIONS.items():
        if only in (None, command):
            importlib.import_module(module).register(sub, _add_redis)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if hasattr(args, "to_ms") and args.to_ms <= args.from_ms:
        to, frm = (format_time_of_day(t, millis=False) for t in (args.to_ms, args.from_ms))
        parser.exit(2, f"ticker {args.command}: error: --to {to} must be after --from {frm}\n")
    try:
        if hasattr(args, "handler"):
            return int(args.handler(args))
        if args.command == "replay":
            return _replay(args)
        if args.command == "aggregate":
            return _aggregate(args)
        if args.command == "serve":
            return _serve(args)
        from ticker.demo import run_demo

        return run_demo(args)
    except TickerError as exc:
        print(f"ticker {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """The `ticker` command (and `python -m ticker`): `main`, then exit.

    The objects are frozen first, so the interpreter's shutdown does not walk them all in
    full collections only to free memory the exit frees anyway: ~50 ms of CPU after a
    replay, several times that on a busy machine, and the tail of every short run."""
    code = main()
    gc.freeze()
    raise SystemExit(code)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(args.redis_url, args.namespace)


def plan_of(args: argparse.Namespace, batch_size: int = 4000) -> "object":
    """The DayPlan the replay options ask for; UsageError or ProfileError if it cannot be."""
    from simulator import profile
    from simulator.generator import DayPlan

    prof = profile.load(args.profile)
    try:
        return DayPlan(prof, args.scale, args.from_ms, args.to_ms, args.seed, batch_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _replay(args: argparse.Namespace) -> int:
    from simulator.generator import DayPlan
    from simulator.progress import ProgressBar
    from simulator.replay import Replay, run_id_problem
    from ticker.redis_io import connect, masked

    if args.batch_size < 1 or args.batch_size > 65_536:
        raise UsageError("--batch-size must be 1..65536")
    if args.run is not None and (problem := run_id_problem(args.run)):
        raise UsageError(f"--run {args.run[:70]!r}: {problem}")
    plan = plan_of(args, args.batch_size)
    assert isinstance(plan, DayPlan)
    settings = _settings(args)
    run_id = args.run or (
        f"{plan.profile.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{os.urandom(2).hex()}"
    )
    bar = ProgressBar(plan, enabled=not args.quiet)
    aggregate = f"ticker aggregate --redis-url {masked(settings.redis_url)} --namespace "
    aggregate += settings.keys.namespace + (f" --shards {args.shards}" if args.shards > 1 else "")

    def on_waiting(backlog: int | None) -> None:
        if backlog is None:
            bar.say("ticker replay: an aggregator is taking the orders; writing again")
        else:
            bar.say(
                f"ticker replay: waiting for an aggregator: {backlog:,} entries written are "
                f"not yet consumed; start one with `{aggregate}`"
            )

    async def go() -> None:
        r = await connect(settings.redis_url)
        await r.aclose()
        replay = Replay(
            settings.redis_url,
            settings.keys,
            plan,
            run_id,
            args.speed,
            bar.update,
            shards=args.shards,
            on_waiting=on_waiting,
        )
        print(
            f"replaying {plan.profile.title} as run {run_id}: {plan.total_orders:,} orders, "
            f"RMB {plan.total_gmv / 100:,.2f}",
            file=sys.stderr,
        )
        main = asyncio.current_task()
        assert main is not None

        def stop() -> None:
            # Cancel the replay (its writes are idempotent: a restart with the same --run
            # goes on after them); should the clean stop itself get stuck, exit anyway.
            main.cancel()
            threading.Timer(STOP_GRACE_S, os._exit, (130,)).start()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            async with _replay_metrics(args, replay):
                progress = await replay.run()
        finally:
            await replay.redis.aclose()
        bar.finish(progress)

    try:
        asyncio.run(go())
    except asyncio.CancelledError:  # stopped by Ctrl-C (see `stop`)
        raise KeyboardInterrupt from None
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from ticker.aggregator import Aggregator
    from ticker.redis_io import connect
    from ticker.supervise import run_forever

    settings = _settings(args)

    async def go() -> None:
        await (await connect(settings.redis_url)).aclose()
        if args.shards > 1:
            async with _metrics(args, settings, []):
                await _aggregate_shards(args, settings)
            return
        agg = Aggregator(
            settings.redis_url,
            settings.keys,
            args.name,
            burst=args.burst,
            hold_seconds=settings.hold_seconds,
        )
        async with _metrics(args, settings, [agg]):
            await _aggregate_one(agg)

    async def _aggregate_one(agg: Aggregator) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Finish the round in hand (its commit is atomic), then stop.
            loop.add_signal_handler(sig, agg.stopping.set)
        try:
            await run_forever(agg)
        finally:
            agg.log_progress()
            await agg.redis.aclose()

    asyncio.run(go())
    return 0


@contextlib.asynccontextmanager
async def _metrics(
    args: argparse.Namespace, settings: Settings, workers: list["Aggregator"]
) -> AsyncIterator[None]:
    """`--metrics-port`: the aggregator's /metrics while it runs (see ticker.procmetrics)."""
    if args.metrics_port is None:
        yield
        return
    from ticker import procmetrics
    from ticker.redis_io import client

    redis = client(settings.redis_url)
    shards = [settings.keys.shard(i) for i in range(args.shards)] if args.shards > 1 else []
    metrics = procmetrics.AggregatorMetrics(redis, shards or [settings.keys], workers)
    runner = await procmetrics.serve(metrics, args.metrics_host, args.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()
        await redis.aclose()


@contextlib.asynccontextmanager
async def _replay_metrics(args: argparse.Namespace, replay: "Replay") -> AsyncIterator[None]:
    """`--metrics-port`: the replay's /metrics while it runs (see ticker.procmetrics)."""
    if args.metrics_port is None:
        yield
        return
    from ticker import procmetrics

    runner = await procmetrics.serve(
        procmetrics.ReplayMetrics(replay), args.metrics_host, args.metrics_port
    )
    try:
        yield
    finally:
        await runner.cleanup()


async def _aggregate_shards(args: argparse.Namespace, settings: Settings) -> None:
    from ticker.sharding import run_sharded

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    print(f"aggregating {args.shards} shards as {name}", file=sys.stderr, flush=True)
    workers = await run_sharded(
        settings.redis_url,
        settings.keys,
        args.shards,
        name,
        stopping,
        burst=args.burst,
        hold_seconds=settings.hold_seconds,
    )
    for w in workers:
        if w.stats.commits:
            w.log_progress()


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ticker.ports import listen, local_url
    from ticker.redis_io import connect
    from ticker.server import GIL_SWITCH_INTERVAL, make_app

    settings = _settings(args)
    # The port first: a busy one is refused before anything is started or announced.
    # (`ticker demo` binds it itself and hands the socket over: --fd.)
    inherited = args.fd is not None
    with socket.socket(fileno=args.fd) if inherited else listen(args.host, args.port) as sock:

        async def check() -> None:
            await (await connect(settings.redis_url)).aclose()

        asyncio.run(check())
        app = make_app(
            settings.redis_url,
            settings.keys,
            policy=_policy(args),
            ingest_token=args.ingest_token or os.environ.get("TICKER_INGEST_TOKEN"),
        )
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        url = local_url(args.host, sock.getsockname()[1])
        print(f"serving on {url}", file=sys.stderr, flush=True)
        web.run_app(app, sock=sock, print=None)
    return 0
