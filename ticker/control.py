"""`ticker control`: pause, resume, change the speed of or seek the running replay."""

import argparse
import asyncio
from typing import Any

import orjson

from ticker.core.control import CONTROL_MAXLEN, parse_command
from ticker.errors import UsageError
from ticker.redis_io import connect
from ticker.settings import Settings


def register(sub: "argparse._SubParsersAction[Any]", add_redis: Any) -> None:
    p = sub.add_parser("control", help="pause, resume, change speed of or seek the replay")
    p.add_argument("action", choices=["pause", "resume", "speed", "seek"])
    p.add_argument(
        "value",
        nargs="?",
        help="the speed (a number or max) or the time of day to seek to (HH:MM[:SS])",
    )
    add_redis(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"action": args.action}
    if args.action == "speed":
        if args.value is None:
            raise UsageError("speed needs a value, e.g. `ticker control speed 60` or `max`")
        try:
            body["speed"] = "max" if args.value == "max" else float(args.value)
        except ValueError:
            raise UsageError(f"{args.value!r} is not a speed; use a number or max") from None
    elif args.action == "seek":
        if args.value is None:
            raise UsageError("seek needs a time of day, e.g. `ticker control seek 01:40`")
        body["to"] = args.value
    try:
        command = parse_command(body)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings = Settings.from_env(args.redis_url, args.namespace)

    async def send() -> None:
        r = await connect(settings.redis_url)
        try:
            await r.xadd(
                settings.keys.control,
                {"c": orjson.dumps(command)},
                maxlen=CONTROL_MAXLEN,
                approximate=True,
            )
        finally:
            await r.aclose()

    asyncio.run(send())
    print(f"sent {command} to the replay in namespace {settings.keys.namespace!r}")
    return 0
