"""Downsampling at query time: which points of a rollup block (or of a run of raw points)
a ``max_points`` answer keeps, and which rollup level a query reads.

The rollup rows themselves are built by :mod:`.rollup`; here "step" is a row too.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

from .rollup import Agg, aggregate


def representatives(agg: Agg) -> List[Tuple[int, float, float]]:
    """The distinct points a block contributes to a downsampled answer."""
    pts = {agg[2]: (agg[2], agg[3], agg[4]), agg[5]: (agg[5], agg[6], agg[7])}
    if agg[8] is not None:
        pts[agg[8]] = (agg[8], agg[9], agg[10])
        pts[agg[11]] = (agg[11], agg[12], agg[13])
    return [pts[s] for s in sorted(pts)]


def downsample_raw(points: Sequence[Tuple[int, float, float]], max_points: int):
    """Downsample sorted raw points: per step bucket keep first/last/min/max and
    every non-finite point.  Used for small series and partial edge blocks."""
    if len(points) <= max_points:
        return list(points)
    lo = points[0][0]
    hi = points[-1][0]
    nb = max(1, max_points // 4)
    width = max(1, -(-(hi - lo + 1) // nb))
    out: List[Tuple[int, float, float]] = []
    buf: List[Tuple[int, float, float]] = []
    cur = None
    for p in points:
        b = (p[0] - lo) // width
        if b != cur and buf:
            out.extend(reps_with_nonfinite(buf))
            buf = []
        cur = b
        buf.append(p)
    if buf:
        out.extend(reps_with_nonfinite(buf))
    return out


def reps_with_nonfinite(buf):
    agg = aggregate(buf)
    pts = {p[0]: p for p in representatives(agg)}
    if agg[1]:
        for p in buf:
            v = p[1]
            if v != v or v in (math.inf, -math.inf):
                pts[p[0]] = p
    return [pts[s] for s in sorted(pts)]


def choose_level(lo: int, hi: int, max_points: int) -> int:
    """Finest level at which the steps ``lo..hi`` fall in at most ``max_points // 4`` blocks.

    Counts the blocks the range really touches, ``(hi >> k) - (lo >> k) + 1``,
    rather than an upper bound from the span alone: that bound is never below 2,
    so for ``max_points < 8`` (one block allowed) no level satisfied it and the
    search never ended.  The exact count reaches 1 at ``k = hi.bit_length()``
    (block 0 then covers every step), so the search always ends there, at or
    below the series' :func:`.rollup.top_level`.  Each block contributes at most four
    points (plus its non-finite ones), so the answer stays within ``max_points``.

    Returns a level below :data:`.rollup.BASE_LEVEL` when the span is small enough to
    downsample from raw points (those are bounded by ``8 * max_points``).
    """
    nb = max(1, max_points // 4)
    k = 0
    while (hi >> k) - (lo >> k) + 1 > nb:
        k += 1
    return k
