"""Brand popularity: how the day's GMV is shared among the brands that take part.

A profile says how many brands end the day above RMB 100m (`brands_over_100m`, scaled
with the day). Those brands form the top tier; each is given an expected share of at least
2.5 times the line, the rest falling off as 1/rank^0.9 (the named brands come first). The
other brands share the rest of the day along 1/rank^beta, beta chosen so the largest of
them expects a quarter of the line. Orders pick a brand in proportion to these shares and
order values do not depend on the brand, so a brand's GMV is its share of the day up to
sampling noise; the gap (x2.5 above, x0.25 below) is many standard deviations wide from
full scale down to about 1/10,000, so exactly `brands_over_100m` brands end above the line.
"""

import numpy as np
import numpy.typing as npt

LINE_FEN = 100_000_000 * 100  # RMB 100m, before scaling
TOP_FLOOR = 2.5  # each top-tier brand expects at least this many times the line
REST_CEILING = 0.25  # no other brand expects more than this many times the line
TOP_TIER_SHARE = 0.40  # of the day's GMV, when the floor allows it


def shares(brands: int, over: int, final_gmv_fen: int) -> npt.NDArray[np.float64]:
    """Each brand's expected share of the day's GMV (they add up to 1), largest first."""
    total = float(final_gmv_fen)
    line = float(LINE_FEN)
    if over == 0:
        # No documented count: the old heavy head, every brand some share.
        ranks = np.arange(1, brands + 1, dtype=np.float64)
        heavy: npt.NDArray[np.float64] = ranks**-0.75
        heavy /= heavy.sum()
        return heavy
    top_total = max(TOP_TIER_SHARE * total, TOP_FLOOR * line * over * 1.2)
    ranks = np.arange(1, over + 1, dtype=np.float64)
    head = ranks**-0.9
    top = TOP_FLOOR * line + (top_total - TOP_FLOOR * line * over) * head / head.sum()
    rest_total = total - top_total
    rest_n = brands - over
    ceiling = REST_CEILING * line
    if rest_total > ceiling * rest_n:
        raise ValueError(
            f"{rest_n:,} brands cannot share RMB {rest_total / 100:,.0f} with none near "
            "RMB 100m; raise `brands`"
        )
    rest_ranks = np.arange(1, rest_n + 1, dtype=np.float64)
    lo, hi = 0.0, 4.0  # sum(rank^-beta) falls as beta rises; find ceiling * sum = rest
    target = rest_total / ceiling
    for _ in range(60):
        beta = (lo + hi) / 2
        if (rest_ranks**-beta).sum() > target:
            lo = beta
        else:
            hi = beta
    rest = rest_ranks**-hi
    rest *= rest_total / rest.sum()
    out: npt.NDArray[np.float64] = np.concatenate((top, rest)) / total
    out /= out.sum()
    return out
