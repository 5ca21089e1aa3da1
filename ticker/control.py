"""`ticker control`: pause, resume, change the speed of or seek the running replay."""

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from ticker.core.control import (
    BadCommand,
    Command,
    encode_command,
    parse_command,
    refusal,
    replay_status,
)
from ticker.errors import UsageError
from ticker.keys import CONTROL_MAXLEN, Keys
from ticker.redis_io import connect, masked
from ticker.settings import Settings


async def send_command(redis: Any, keys: Keys, command: Command) -> None:
    """Append a command to the capped control stream, where the replay reads it;
    `ticker control` and `POST /api/replay` both send this way."""
    await redis.xadd(
        keys.control, {"c": encode_command(command)}, maxlen=CONTROL_MAXLEN, approximate=True
    )


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
    except BadCommand as exc:
        raise UsageError(str(exc)) from None
    settings = Settings.from_env(args.redis_url, args.namespace)
    where = f"namespace {settings.keys.namespace!r} at {masked(settings.redis_url)}"

    async def send() -> str | None:
        """Send the command unless the replay's state says nothing can obey it."""
        r = await connect(settings.redis_url)
        try:
            raw = await r.hget(settings.keys.replay, "state")
            try:
                state = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                state = None
            why = refusal(replay_status(state, int(time.time() * 1000)), command)
            if why:
                return why
            await send_command(r, settings.keys, command)
            return None
        finally:
            await r.aclose()

    why = asyncio.run(send())
    if why:
        print(f"ticker control: {why} ({where})", file=sys.stderr)
        return 1
    print(f"sent {command.wire()} to the replay in {where}")
    return 0
