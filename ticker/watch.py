"""`ticker watch [URL]`: the live counter in a terminal, built on ticker.client."""

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any, TextIO

from websockets.exceptions import InvalidStatus

from ticker.client import FeedClient, FeedUnreachable, Milestone, Snapshot, Tick, check_url
from ticker.core.clock import format_time_of_day
from ticker.errors import UsageError


def render(state: dict[str, Any], milestones: list[dict[str, Any]], status: str) -> list[str]:
    """The screen's lines for a state. Pure, so tests can read it."""
    yuan = state.get("gmv_fen", 0) // 100
    rate = state.get("gmv_fen_per_s", 0) // 100
    title = state.get("title") or "waiting for a replay"
    scale = state.get("scale")
    lines = [
        f"{title}{f'  (scale {scale})' if scale not in (None, '1') else ''}   [{status}]",
        "",
        f"  GMV      RMB {yuan:>20,}",
        f"  orders       {state.get('orders', 0):>20,}",
        f"  rate     RMB {rate:>17,}/s   {state.get('orders_per_s', 0):,} orders/s",
        f"  clock        {format_time_of_day(state.get('sim_time_ms', 0), millis=False):>20}",
        "",
    ]
    for m in milestones[-6:]:
        documented = f"  (documented {m['documented']})" if m.get("documented") else ""
        lines.append(f"  * {m['sim_time'][:8]}  {m['label']}{documented}")
    if state.get("ended"):
        lines.append("  replay ended")
    return lines


async def watch(url: str, out: TextIO, until_ended: bool, token: str | None) -> int:
    state: dict[str, Any] = {}
    milestones: list[dict[str, Any]] = []
    tty = out.isatty()
    last_print = 0.0

    def on_lost(reason: str) -> None:
        line = f"ticker watch: lost the feed at {client.url} ({reason}); reconnecting"
        if tty:
            lines = render(state, milestones, "reconnecting")
            out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n" + line + "\n")
            out.flush()
        else:
            print(line, file=out, flush=True)

    # The first connection must work (else say why and stop); later ones are retried.
    # Deltas: most of the totals (the milestones, last year's curve) do not change.
    client = FeedClient(
        url,
        topics=["totals"],
        max_rate=4,
        token=token,
        retry_first=False,
        on_lost=on_lost,
        delta=True,
    )
    async for msg in client:
        if isinstance(msg, Snapshot | Tick):
            state = msg.state
            milestones = list(state.get("milestones", milestones))
        elif isinstance(msg, Milestone):
            if all(m["id"] != msg.milestone["id"] for m in milestones):
                milestones.append(msg.milestone)
            if not tty:
                print(
                    f"milestone: {msg.milestone['label']} at {msg.milestone['sim_time']}",
                    file=out,
                    flush=True,
                )
        status = "live" if client.connected else "reconnecting"
        lines = render(state, milestones, status)
        if tty:
            out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
            out.flush()
        elif time.monotonic() - last_print >= 1 or state.get("ended"):
            last_print = time.monotonic()
            print(" | ".join(line.strip() for line in lines[2:6]), file=out, flush=True)
        if until_ended and state.get("ended"):
            return 0
    return 0


def register(sub: "argparse._SubParsersAction[Any]", add_redis: Any) -> None:
    p = sub.add_parser("watch", help="watch the live counter in the terminal")
    p.add_argument(
        "url",
        nargs="?",
        default="http://127.0.0.1:8080/",
        help="the page's or the feed's address (default http://127.0.0.1:8080/)",
    )
    p.add_argument("--token", help="the feed token, if the feed is private")
    p.add_argument("--until-ended", action="store_true", help="exit when the replay ends")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        url = check_url(args.url)
    except ValueError as exc:
        raise UsageError(f"{args.url!r} is not a feed address: {exc}") from None
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(watch(url, sys.stdout, args.until_ended, args.token))
        except FeedUnreachable as exc:
            print(f"ticker watch: error: {exc}", file=sys.stderr)
            return 1
        except InvalidStatus as exc:
            code = exc.response.status_code
            hint = "a wrong or missing --token" if code == 401 else "this client is not allowed"
            print(
                f"ticker watch: error: the server refused the feed (HTTP {code}: {hint})",
                file=sys.stderr,
            )
            return 1
    return 130
