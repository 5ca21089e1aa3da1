"""The replay clock: which simulated moment is due at which wall moment. Pure.

The clock is anchored at a (wall, simulated) pair and runs at `speed` simulated seconds per
wall second (None: as fast as possible). Pausing, resuming and changing speed re-anchor it
at the simulated moment the replay has reached, so it never jumps over orders.
"""

from dataclasses import dataclass


@dataclass
class ReplayClock:
    anchor_wall: float
    anchor_sim: int
    speed: float | None
    paused: bool = False

    def due(self, sim_ms: int) -> float | None:
        """The wall time at which sim_ms is due; None while paused."""
        if self.paused:
            return None
        if self.speed is None:
            return self.anchor_wall
        return self.anchor_wall + (sim_ms - self.anchor_sim) / 1000 / self.speed

    def behind_ms(self, sim_ms: int, now: float) -> int:
        """How far (in simulated ms) the replay at sim_ms trails the clock."""
        if self.paused or self.speed is None:
            return 0
        clock_sim = self.anchor_sim + (now - self.anchor_wall) * 1000 * self.speed
        return max(0, int(clock_sim - sim_ms))

    def speed_reached(self, sim_ms: int, now: float) -> float:
        elapsed = now - self.anchor_wall
        return (sim_ms - self.anchor_sim) / 1000 / elapsed if elapsed > 0 else 0.0

    def reanchor(self, now: float, sim_ms: int) -> None:
        self.anchor_wall, self.anchor_sim = now, sim_ms

    def set_speed(self, speed: float | None, now: float, sim_ms: int) -> None:
        self.reanchor(now, sim_ms)
        self.speed = speed

    def pause(self) -> None:
        self.paused = True

    def resume(self, now: float, sim_ms: int) -> None:
        self.reanchor(now, sim_ms)
        self.paused = False
