"""The replay's progress bar on stderr: a redrawn line on a terminal, a line every 5 s else."""

import sys
import time
from typing import TextIO

from simulator.generator import DayPlan
from simulator.replay import Progress
from ticker.core.clock import format_time_of_day


class ProgressBar:
    WIDTH = 24

    def __init__(self, plan: DayPlan, enabled: bool = True, out: TextIO = sys.stderr) -> None:
        self.plan, self.enabled, self.out = plan, enabled, out
        self.tty = out.isatty()
        self.last_line = 0.0

    def line(self, p: Progress) -> str:
        span = self.plan.to_ms - self.plan.from_ms
        done = (p.sim_ms - self.plan.from_ms) / span
        filled = int(done * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        asked = "max" if p.speed_asked is None else f"{p.speed_asked:g}x"
        behind = f"  behind by {p.behind_ms / 1000:.1f}s" if p.behind_ms > 1000 else ""
        waiting = (
            f"  waiting for an aggregator ({p.backlog:,} entries not yet consumed)"
            if p.waiting
            else ""
        )
        return (
            f"[{bar}] {format_time_of_day(p.sim_ms, millis=False)}  "
            f"speed {p.speed_reached:,.1f}x (asked {asked}){behind}  "
            f"{p.orders:,} orders  RMB {p.gmv_fen // 100:,} written{waiting}"
        )

    def say(self, message: str) -> None:
        """Print a line of its own, keeping the redrawn bar below it on a terminal."""
        if self.tty and self.enabled:
            self.out.write("\r\x1b[K")
        print(message, file=self.out, flush=True)

    def update(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.out.write("\r" + self.line(p) + "\x1b[K")
            self.out.flush()
        elif time.monotonic() - self.last_line >= 5:
            self.last_line = time.monotonic()
            print(self.line(p), file=self.out, flush=True)

    def finish(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.out.write("\r" + self.line(p) + "\x1b[K\n")
        else:
            print(self.line(p), file=self.out)
        rate = p.orders / p.wall_s if p.wall_s else 0
        print(
            f"done: {p.orders:,} orders, RMB {p.gmv_fen / 100:,.2f} in {p.wall_s:.1f}s "
            f"({rate:,.0f} orders/s written)",
            file=self.out,
            flush=True,
        )
