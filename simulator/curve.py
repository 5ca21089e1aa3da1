"""Cumulative curves through documented points: monotone, exact at both ends.

A curve is a monotone cubic (Fritsch-Carlson, as in PCHIP) through (0, 0), the documented
points and (24:00, final). It never falls, so every slot of the day gets a non-negative
share, and the shares of any split of the day add up to the final figure exactly: the
curve is evaluated to whole units, then differenced (a telescoping sum).
"""

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ticker.core.clock import DAY_MS

Int64Array = npt.NDArray[np.int64]


class Curve:
    """A monotone cumulative curve over the day, evaluated in whole units."""

    def __init__(self, knots: Sequence[tuple[int, int]], final: int, scale: Fraction) -> None:
        xs = [0, *(x for x, _ in knots), DAY_MS]
        ys = [0, *(y for _, y in knots), final]
        self.x = np.array(xs, dtype=np.float64)
        self.y = np.array(ys, dtype=np.float64)
        self.final = final
        self.scale = scale
        self.slopes = _fritsch_carlson_slopes(self.x, self.y)

    def unscaled(self, t_ms: npt.NDArray[Any]) -> Int64Array:
        """The curve's whole-unit value at each time, unscaled."""
        t = np.asarray(t_ms, dtype=np.float64)
        k = np.clip(np.searchsorted(self.x, t, side="right") - 1, 0, len(self.x) - 2)
        h = self.x[k + 1] - self.x[k]
        s = (t - self.x[k]) / h
        y0, y1, d0, d1 = self.y[k], self.y[k + 1], self.slopes[k] * h, self.slopes[k + 1] * h
        s2, s3 = s * s, s * s * s
        value = (
            (2 * s3 - 3 * s2 + 1) * y0
            + (s3 - 2 * s2 + s) * d0
            + (-2 * s3 + 3 * s2) * y1
            + (s3 - s2) * d1
        )
        whole = np.floor(value).astype(np.int64)
        # Pin the ends exactly, and keep float noise from making the curve dip.
        whole = np.clip(whole, 0, self.final)
        whole[t >= DAY_MS] = self.final
        return np.maximum.accumulate(whole) if whole.ndim and len(whole) else whole

    def __call__(self, t_ms: npt.NDArray[Any]) -> Int64Array:
        """The scaled value, floor(scale * unscaled), computed exactly in integers."""
        v = self.unscaled(t_ms)
        num, den = self.scale.numerator, self.scale.denominator
        return (v // den) * num + ((v % den) * num) // den

    def scaled_total(self) -> int:
        return self.final * self.scale.numerator // self.scale.denominator


def _fritsch_carlson_slopes(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    slope = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if slope * d0 <= 0:
        return 0.0
    if d0 * d1 <= 0 and abs(slope) > 3 * abs(d0):
        return 3 * d0
    return slope
