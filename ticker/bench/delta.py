"""Delta ticks against full ticks, on a running server: bytes per message and encode CPU.

    python -m ticker.bench.delta http://127.0.0.1:8080/ --seconds 30 [--topics totals,top]

Two websocket clients of the same subscription, one asking for deltas, read the feed for
`--seconds` (run it while a replay runs, e.g. `ticker replay --speed 1 --from 00:00`: the
midnight peak is its first minutes). It reports the bytes of their tick messages, checks
that the deltas rebuild exactly the full ticks at every position both got, and times the
server's encoding of each step offline from the states received: a full tick
(`orjson.dumps`) against a delta (`ticker.core.delta.diff`, then `orjson.dumps`).
Figures vary with the machine's load; nothing is asserted.
"""

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

import orjson
import websockets

from ticker import feed
from ticker.client import feed_url
from ticker.core import delta


async def _read(url: str, request: dict[str, Any], seconds: float, into: dict[str, Any]) -> None:
    """Collect (position, type, bytes, state) for each tick or delta, rebuilding deltas."""
    state: dict[str, Any] | None = None
    async with websockets.connect(url, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "subscribe", **request}))
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            msg = orjson.loads(raw)
            if msg["type"] == "tick":
                state = msg["state"]
            elif msg["type"] == "delta" and state is not None:
                state = delta.apply(state, msg["patch"])
            else:
                continue
            size = len(raw.encode() if isinstance(raw, str) else raw)
            into["messages"].append((msg["position"], msg["type"], size, state))


def _encode_cpu(states: list[tuple[str, dict[str, Any]]], repeat: int = 5) -> tuple[float, float]:
    """Microseconds per step: a full tick's encoding, a delta's (diff and encoding)."""
    pairs = list(itertools.pairwise(states))
    if not pairs:
        return 0.0, 0.0
    started = time.process_time()
    for _ in range(repeat):
        for _, (p, s) in pairs:
            feed.tick(s, p).encode()
    full = time.process_time() - started
    started = time.process_time()
    for _ in range(repeat):
        for (_, a), (p, b) in pairs:
            patch = delta.diff(a, b)
            feed.delta(patch or {}, p).encode()
    deltas = time.process_time() - started
    n = repeat * len(pairs)
    return full / n * 1e6, deltas / n * 1e6


async def measure(url: str, seconds: float, topics: list[str] | None) -> dict[str, Any]:
    request: dict[str, Any] = {} if topics is None else {"topics": topics}
    full: dict[str, Any] = {"messages": []}
    deltas: dict[str, Any] = {"messages": []}
    await asyncio.gather(
        _read(url, request, seconds, full),
        _read(url, {**request, "delta": True}, seconds, deltas),
    )
    by_position = {p: s for p, _, _, s in full["messages"]}
    common = [p for p, _, _, s in deltas["messages"] if p in by_position]
    mismatches = sum(by_position[p] != s for p, _, _, s in deltas["messages"] if p in by_position)
    full_bytes = [n for _, _, n, _ in full["messages"]]
    delta_bytes = [n for _, _, n, _ in deltas["messages"]]
    kinds = [k for _, k, _, _ in deltas["messages"]]
    full_avg = sum(full_bytes) / max(1, len(full_bytes))
    delta_avg = sum(delta_bytes) / max(1, len(delta_bytes))
    cpu_full, cpu_delta = _encode_cpu([(p, s) for p, _, _, s in full["messages"]])
    return {
        "seconds": seconds,
        "topics": topics or sorted(feed.TOPICS),
        "full_messages": len(full_bytes),
        "delta_messages": len(delta_bytes),
        "delta_of_which_full_ticks": kinds.count("tick"),
        "full_bytes_per_message": round(full_avg),
        "delta_bytes_per_message": round(delta_avg),
        "bytes_ratio": round(full_avg / delta_avg, 2) if delta_avg else None,
        "positions_compared": len(common),
        "mismatches": mismatches,
        "encode_us_full": round(cpu_full, 1),
        "encode_us_delta": round(cpu_delta, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ticker.bench.delta", description=__doc__)
    p.add_argument("url", nargs="?", default="http://127.0.0.1:8080/")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--topics", help="comma-separated (default: every topic)")
    args = p.parse_args(argv)
    topics = args.topics.split(",") if args.topics else None
    result = asyncio.run(measure(feed_url(args.url), args.seconds, topics))
    print(json.dumps(result, indent=2))
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
