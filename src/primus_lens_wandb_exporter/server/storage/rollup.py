"""Per-series step rollups that make ``max_points`` downsampling cheap.

A series (workload, source, metric, rank, run) with many points gets, at every
level ``k`` from :data:`BASE_LEVEL` up, one row per block of ``2**k`` steps
holding the block's first, last, min and max point (min/max over finite values),
its point count, its count of non-finite points and its time range.  A query
for ``max_points`` picks the finest level whose blocks number at most
``max_points / 4`` and reads that many rows instead of scanning the raw points:
a GROUP BY over one million points takes about half a second in SQLite, a
range read of 500 rollup rows takes about a millisecond.

Rows are recomputed at ingest for the blocks a batch touched, bottom-up: the
base level from the raw points, every higher level from its two children, so
the rollup is exact after updates (a retried batch with other values) too.

Everything here is plain Python shared by both storage backends.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from operator import itemgetter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

_second = itemgetter(1)
_third = itemgetter(2)

#: Finest rollup level: blocks of 16 steps.  Finer levels would cost more rows
#: at ingest than the raw points they replace at query time.
BASE_LEVEL = 4
#: A series gets a rollup once it holds more points than this; smaller series
#: are downsampled from their raw points, which is as fast and costs no writes.
ROLLUP_MIN_POINTS = 8192
#: Largest step the protocol accepts (the range "every step" of a series).
MAX_STEP = 2**63 - 1

# Agg tuple layout (one block):
#   0 n, 1 nf (non-finite count),
#   2 first_step, 3 first_value, 4 first_ts,
#   5 last_step, 6 last_value, 7 last_ts,
#   8 min_step, 9 min_value, 10 min_ts,   (None when the block has no finite value)
#   11 max_step, 12 max_value, 13 max_ts,
#   14 time_min, 15 time_max
Agg = Tuple


def top_level(max_step: int) -> int:
    """Highest level kept for a series whose largest step is ``max_step``.

    At this level block 0 covers every step, so no query needs a coarser one.
    """
    return max(BASE_LEVEL, int(max_step).bit_length())


def aggregate(points: Sequence[Tuple[int, float, float]]) -> Agg:
    """Aggregate ``(step, value, ts)`` points sorted by step into one block."""
    vals = list(map(_second, points))
    tss = list(map(_third, points))
    # Fast path, the same result as the loop below: a finite sum means every
    # value (timestamp) is finite (a NaN or infinity makes the sum non-finite;
    # an overflowing sum merely takes the loop), and min()/max() then return the
    # first point of the smallest/largest value, as the loop's strict < and > do.
    if math.isfinite(sum(vals)) and math.isfinite(sum(tss)):
        mn = min(points, key=_second)
        mx = max(points, key=_second)
        f = points[0]
        last = points[-1]
        return (len(points), 0, f[0], f[1], f[2], last[0], last[1], last[2],
                mn[0], mn[1], mn[2], mx[0], mx[1], mx[2], min(tss), max(tss))
    n = len(points)
    nf = 0
    mn = mx = None
    tmin = math.inf
    tmax = -math.inf
    for p in points:
        v = p[1]
        t = p[2]
        if t < tmin:
            tmin = t
        if t > tmax:
            tmax = t
        # NaN fails both comparisons and the infinities exceed every finite value.
        if v != v or v == math.inf or v == -math.inf:
            nf += 1
            continue
        if mn is None or v < mn[1]:
            mn = p
        if mx is None or v > mx[1]:
            mx = p
    f = points[0]
    last = points[-1]
    mn = mn or (None, None, None)
    mx = mx or (None, None, None)
    return (n, nf, f[0], f[1], f[2], last[0], last[1], last[2],
            mn[0], mn[1], mn[2], mx[0], mx[1], mx[2], tmin, tmax)


def combine(a: Optional[Agg], b: Optional[Agg]) -> Agg:
    """Combine two blocks where every step of ``a`` precedes every step of ``b``."""
    if a is None:
        return b
    if b is None:
        return a
    if a[9] is None:
        mn = b[8:11]
    elif b[9] is None or a[9] <= b[9]:
        mn = a[8:11]
    else:
        mn = b[8:11]
    if a[12] is None:
        mx = b[11:14]
    elif b[12] is None or a[12] >= b[12]:
        mx = a[11:14]
    else:
        mx = b[11:14]
    return (a[0] + b[0], a[1] + b[1], a[2], a[3], a[4], b[5], b[6], b[7],
            mn[0], mn[1], mn[2], mx[0], mx[1], mx[2], min(a[14], b[14]), max(a[15], b[15]))


def block_runs(blocks: Sequence[int], level: int, max_gap: int = 64) -> List[Tuple[int, int]]:
    """Group sorted block numbers into step ranges to read with few range queries."""
    runs: List[Tuple[int, int]] = []
    start = prev = None
    for b in blocks:
        if start is None:
            start = prev = b
        elif b - prev <= max_gap:
            prev = b
        else:
            runs.append((start << level, ((prev + 1) << level) - 1))
            start = prev = b
    if start is not None:
        runs.append((start << level, ((prev + 1) << level) - 1))
    return runs


def base_blocks(points_by_step: Iterable[Tuple[int, float, float]]) -> Dict[int, Agg]:
    """Aggregate raw ``(step, value, ts)`` points (sorted) into base-level blocks."""
    points = points_by_step if isinstance(points_by_step, list) else list(points_by_step)
    steps = [p[0] for p in points]
    out: Dict[int, Agg] = {}
    i = 0
    n = len(points)
    while i < n:
        # One slice per block: find where the next block starts by bisection.
        b = steps[i] >> BASE_LEVEL
        j = bisect_left(steps, (b + 1) << BASE_LEVEL, i)
        out[b] = aggregate(points[i:j])
        i = j
    return out


def sibling_needs(touched_steps: Iterable[int], top: int) -> Dict[int, List[int]]:
    """For each level, the child blocks that are not recomputed but must be read.

    Dirty blocks at level k are the ancestors of the touched steps; building a
    dirty parent at level k+1 needs both its children, so the clean sibling of
    a dirty child is read from the database.
    """
    return sibling_needs_of_blocks({s >> BASE_LEVEL for s in touched_steps}, top)


def sibling_needs_of_blocks(base: Iterable[int], top: int) -> Dict[int, List[int]]:
    """:func:`sibling_needs` for the touched base-level blocks."""
    base = set(base)
    needs: Dict[int, List[int]] = {}
    dirty = base
    for k in range(BASE_LEVEL, top):
        parents = {b >> 1 for b in dirty}
        missing = sorted({c for p in parents for c in (2 * p, 2 * p + 1)} - dirty)
        if missing:
            needs[k] = missing
        dirty = parents
    return needs


def build_levels(base: Dict[int, Agg], siblings: Dict[Tuple[int, int], Agg], top: int):
    """Recompute every dirty block from the base level up to ``top``.

    ``base`` maps dirty base-level blocks to their aggregate (a block missing
    from it while touched means it became empty, which cannot happen: points
    are never deleted).  ``siblings`` maps ``(level, block)`` to stored rows.
    Yields ``(level, block, agg)``.
    """
    cur = base
    for b, agg in cur.items():
        yield BASE_LEVEL, b, agg
    for k in range(BASE_LEVEL + 1, top + 1):
        nxt: Dict[int, Agg] = {}
        for p in {b >> 1 for b in cur}:
            left = cur.get(2 * p) or siblings.get((k - 1, 2 * p))
            right = cur.get(2 * p + 1) or siblings.get((k - 1, 2 * p + 1))
            nxt[p] = combine(left, right)
        for b, agg in nxt.items():
            yield k, b, agg
        cur = nxt


def full_levels(points: Sequence[Tuple[int, float, float]], top: int):
    """Every rollup row of a series from all its points (sorted by step)."""
    return build_levels(base_blocks(points), {}, top)


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
            out.extend(_reps_with_nonfinite(buf))
            buf = []
        cur = b
        buf.append(p)
    if buf:
        out.extend(_reps_with_nonfinite(buf))
    return out


def _reps_with_nonfinite(buf):
    agg = aggregate(buf)
    pts = {p[0]: p for p in representatives(agg)}
    if agg[1]:
        for p in buf:
            v = p[1]
            if v != v or v in (math.inf, -math.inf):
                pts[p[0]] = p
    return [pts[s] for s in sorted(pts)]


def choose_level(span_steps: int, max_points: int) -> int:
    """Finest level with at most ``max_points // 4`` blocks over ``span_steps``.

    Returns a level below :data:`BASE_LEVEL` when the span is small enough to
    downsample from raw points (those are bounded by ``4 * max_points``).
    """
    nb = max(1, max_points // 4)
    k = 0
    # A span of S steps touches at most (S >> k) + 2 blocks of 2**k steps.
    while (span_steps >> k) + 2 > nb:
        k += 1
    return k
