"""Per-series step rollups that make ``max_points`` downsampling cheap.

A series (workload, source, metric, rank, run) with many points gets, at every
level ``k`` from :data:`BASE_LEVEL` up, one row per block of ``2**k`` steps
holding the block's first, last, min and max point (min/max over finite values),
its point count, its count of non-finite points and its time range.  A query
for ``max_points`` picks the finest level whose blocks number at most
``max_points / 4`` and reads that many rows instead of scanning the raw points:
a GROUP BY over one million points takes about half a second in SQLite, a
range read of 500 rollup rows takes about a millisecond.

Only **closed** blocks are stored: a block is closed once the series has a row
past it (``block < max_row >> level``); the one open block of each level, the
one holding the series' last row, is composed when a query needs it (see
:func:`open_spine`) from at most one stored block per lower level and the raw
points of the open base block.  An exporter appends one point per metric per
request, and with every block stored each point rewrote its open block at every
level (5–12 rows a series); now a point writes a row only when it closes a block
(about one row per 32 points), so steady-state ingest costs what ingest before
any rollup costs.

Rows are recomputed at ingest for the blocks a batch touched, bottom-up: the
base level from the raw points, every higher level from its two children, so
the rollup is exact after updates (a retried batch with other values) too.  The
base block that held the series' last row before the batch is always among them:
its ancestors are the blocks that were open, so none of them is ever read as a
stored row, and those the batch closes are written with their final aggregate.

**Phases.**  Block boundaries are not the same rows for every series: a series' rollup
works on its rows moved by a **phase** in ``0..63`` (:func:`phase_of`, kept in the series'
``has_rollup`` as ``phase + 1``), so block ``b`` of level ``k`` holds the rows ``r`` with
``(r + phase) >> k == b``.  The ranks of a data-parallel job log the same row in the same
second; with one alignment for all, every series of a 1,000-rank job closed a base block
in the same second, once every 64 rows (10,000 rollup rows and their index pages in one
second: on PostgreSQL a 30-s steady-state fleet run had p99 138 / 165 ms with that second
in it, 14 / 24 ms with the run started 30 rows later, where it fell outside).
Phased, about 1/64 of the series close a block each second.  Everything in this module
works on the moved rows (:meth:`Columns.shifted`); the callers move rows read from and
written to ``points``.  Series rolled up before phases existed keep phase 0.

Everything here is plain Python shared by both storage backends.

Query-time downsampling (which points of a block an answer keeps) is in
:mod:`.downsample`, the per-process tail and id caches in :mod:`.caches`.  This
module is over 400 lines (~630) because the block math, the composition of open blocks
the queries use, and :class:`Tail` (the rollup state an append carries from one batch to
the next) are one job: :func:`update` builds the next tail and :meth:`Tail.update` calls
:func:`update`, so splitting them would make two modules import each other.

"Step" in this module means a point's W&B history **row** (``row_index``, the
integer key of a point): rollups bucket over rows, i.e. in history order.  A
point's chart step (a double, possibly repeated or fractional) plays no part
here; the query looks up the steps of the points a rollup keeps.
"""

from __future__ import annotations

import math
import zlib
from array import array
from bisect import bisect_left
from operator import eq, itemgetter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)

#: Finest rollup level: blocks of 64 steps.  Every batch writes one row per base
#: block it touches (and about as many above); finer levels cost more rows at
#: ingest than the raw points they save at query time, where a span too short
#: for this level (under ``max_points / 4 * 64`` steps) is downsampled from its
#: raw points.
BASE_LEVEL = 6
#: A series gets a rollup once it holds more points than this (four base
#: blocks); smaller series are downsampled from their raw points.  Kept low: a
#: series that crosses it later has its rollup built from all its stored points,
#: which for thousands of points costs more than maintaining it all along.
ROLLUP_MIN_POINTS = 4 << BASE_LEVEL
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


def phase_of(key: Sequence) -> int:
    """The rollup phase (``0..63``) a series gets when its rollup is first built: a hash
    of its key (workload, source, metric, rank, run), the same in every process."""
    return zlib.crc32("\x1f".join(map(str, key)).encode()) & ((1 << BASE_LEVEL) - 1)


def _moved_point(a: Agg, row: int) -> Agg:
    """The aggregate ``a`` of a one-point block with the point's row replaced by ``row``
    (moved by a phase); its min/max row stays None where the value is not finite."""
    return (a[0], a[1], row, a[3], a[4], row, a[6], a[7], row if a[8] is not None else None, a[9], a[10],
            row if a[11] is not None else None, a[12], a[13], a[14], a[15])


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


def arrays(pts: Dict[int, tuple]) -> Tuple[List[int], List[float], List[float]]:
    """``{row: (value, ts, ...)}`` as three lists sorted by row (C-level work only)."""
    steps = list(pts)
    vts = list(pts.values())
    srt = sorted(steps)
    if srt != steps:  # clients send steps in order; a sorted list costs one pass
        vts = list(map(pts.__getitem__, srt))
        steps = srt
    return steps, list(map(_first, vts)), list(map(_second, vts))


def block_slices(steps: Sequence[int], level: int = None) -> List[Tuple[int, int, int]]:
    """``(block, i, j)`` for each block of ``2**level`` steps (default: the base
    level) holding ``steps[i:j]``; ``steps`` sorted."""
    level = BASE_LEVEL if level is None else level
    out = []
    i = 0
    n = len(steps)
    while i < n:
        b = steps[i] >> level
        j = bisect_left(steps, (b + 1) << level, i)
        out.append((b, i, j))
        i = j
    return out


def agg_slice(steps: Sequence[int], vals: Sequence[float], tss: Sequence[float], i: int, j: int) -> Agg:
    """:func:`aggregate` of the points ``i:j`` of parallel sorted lists.

    Finite blocks (the rule) take a handful of C calls instead of a Python step
    per point: ``min``/``max`` of the slice and ``index`` for its first position,
    the same point :func:`aggregate` picks.  A :class:`Tail`'s arrays are sliced to
    lists first: each pass over an array boxes every value again (a closed base
    block, 64 points: ~16 vs ~9 us, and a lockstep fleet closes 10,000 at once).
    """
    vs = vals[i:j]
    ts = tss[i:j]
    if type(vs) is array:
        vs = vs.tolist()
    if type(ts) is array:
        ts = ts.tolist()
    if math.isfinite(sum(vs)) and math.isfinite(sum(ts)):
        mn = min(vs)
        a = vs.index(mn) + i
        mx = max(vs)
        b = vs.index(mx) + i
        k = j - 1
        return (j - i, 0, steps[i], vals[i], tss[i], steps[k], vals[k], tss[k],
                steps[a], mn, tss[a], steps[b], mx, tss[b], min(ts), max(ts))
    return aggregate(list(zip(steps[i:j], vs, ts)))


class Columns:
    """One series' points of a batch as step-sorted columns, with the aggregate
    of each base block over these points alone.

    Built before the write transaction: the aggregates of blocks that hold no
    stored point (every block but the edge one of an append) are final, so the
    Python work of a rollup mostly happens outside the database's write lock.
    """

    __slots__ = ("steps", "vals", "tss", "slices", "aggs", "step_range", "step_is_row")

    def __init__(self, pts: Dict[int, tuple]):
        if len(pts) == 1:
            # One point: what an exporter sends per metric per request (a fleet's rule,
            # ~10 series a request), built without the general path's sorting and
            # slicing (the same fields, ~5x cheaper).
            (row, (v, ts, step)), = pts.items()
            self.steps, self.vals, self.tss = [row], [v], [ts]
            self.step_range = (float(step), float(step))
            self.step_is_row = row == step
            self.slices = [(row >> BASE_LEVEL, 0, 1)]
            self.aggs = {row >> BASE_LEVEL: (1, 0, row, v, ts, row, v, ts, row, v, ts, row, v, ts, ts, ts)
                         if v - v == 0 and ts - ts == 0 else aggregate([(row, v, ts)])}
            return
        steps, vals, tss = self.steps, self.vals, self.tss = arrays(pts)
        # (lowest, highest) chart step of the batch's points, for the series summary.
        charted = list(map(_third, pts.values()))
        self.step_range = (float(min(charted)), float(max(charted)))  # steps may come as ints
        self.step_is_row = all(map(eq, pts.keys(), charted))
        self.slices = block_slices(steps)
        self.aggs = {b: agg_slice(steps, vals, tss, i, j) for b, i, j in self.slices}

    def shifted(self, shift: int) -> "Columns":
        """These points with every row moved by ``shift`` (a series' phase, see the module
        doc): what the rollup of that series works on.  The step fields stay as they are."""
        if not shift:
            return self
        out = Columns.__new__(Columns)
        out.step_range, out.step_is_row = self.step_range, self.step_is_row
        out.vals, out.tss = vals, tss = self.vals, self.tss
        if len(self.steps) == 1:
            u = self.steps[0] + shift
            out.steps = [u]
            out.slices = [(u >> BASE_LEVEL, 0, 1)]
            out.aggs = {u >> BASE_LEVEL: _moved_point(next(iter(self.aggs.values())), u)}
            return out
        steps = out.steps = [s + shift for s in self.steps]
        out.slices = block_slices(steps)
        out.aggs = {b: agg_slice(steps, vals, tss, i, j) for b, i, j in out.slices}
        return out

    def touch(self, old_max: int) -> Tuple[int, int, List[int], Dict[int, List[int]]]:
        """``(top, old_top, stored, needs)`` of this batch on a series whose last
        step was ``old_max``: its top level after and before, the touched base
        blocks that may also hold stored points, and the clean sibling rows the
        rebuild needs (:func:`sibling_needs_of_blocks`)."""
        top, old_top = top_level(max(old_max, self.steps[-1])), top_level(old_max)
        blocks = [b for b, _, _ in self.slices]
        # The base block holding the old last row is always rebuilt, touched or not:
        # its ancestors were the open blocks, never stored (see the module doc), so
        # they must be rebuilt rather than read, and those this batch closes written.
        edge = old_max >> BASE_LEVEL
        if self.steps[0] > old_max:
            # Append: only that block can hold stored points; every other touched
            # block is this batch's.
            stored = [edge]
        else:
            stored = blocks if edge in blocks else sorted(blocks + [edge])
        dirty = blocks if edge in blocks else blocks + [edge]
        return top, old_top, stored, sibling_needs_of_blocks(dirty, top, old_top)


def base_blocks(points_by_step: Iterable[Tuple[int, float, float]]) -> Dict[int, Agg]:
    """Aggregate raw ``(step, value, ts)`` points (sorted) into base-level blocks."""
    points = points_by_step if isinstance(points_by_step, list) else list(points_by_step)
    if not points:
        return {}
    steps, vals, tss = (list(c) for c in zip(*points))
    return {b: agg_slice(steps, vals, tss, i, j) for b, i, j in block_slices(steps)}


def _parents(dirty: Iterable[int], level: int, old_top: int) -> set:
    """Blocks at ``level`` to recompute given the dirty blocks one level down.

    A level above the series' old top level did not exist: its block 0 (the
    left spine, covering the old points) is built as well, from the old top
    block and whatever this batch added beside it.
    """
    parents = {b >> 1 for b in dirty}
    if level > old_top:
        parents.add(0)
    return parents


def sibling_needs_of_blocks(base: Iterable[int], top: int, old_top: Optional[int] = None) -> Dict[int, List[int]]:
    """For each level, the child blocks that are not recomputed but must be read.

    Dirty blocks at level k are the ancestors of the touched base blocks (plus
    the left spine of levels new to the series, see :func:`_parents`); building
    a dirty parent at level k+1 needs both its children, so a clean sibling of a
    dirty child is read from the database.
    """
    old_top = top if old_top is None else old_top
    dirty = set(base)
    needs: Dict[int, List[int]] = {}
    for k in range(BASE_LEVEL, top):
        parents = _parents(dirty, k + 1, old_top)
        missing = sorted({c for p in parents for c in (2 * p, 2 * p + 1)} - dirty)
        if missing:
            needs[k] = missing
        dirty = parents
    return needs


def build_levels(base: Dict[int, Agg], siblings: Dict[Tuple[int, int], Agg], top: int,
                 old_top: Optional[int] = None):
    """Recompute every dirty block from the base level up to ``top``.

    ``base`` maps dirty base-level blocks to their aggregate; ``siblings`` maps
    ``(level, block)`` to stored rows (a block absent from both is empty).
    ``old_top`` is the series' top level before this batch (default ``top``).
    Yields ``(level, block, agg)``.
    """
    old_top = top if old_top is None else old_top
    cur = base
    for b, agg in cur.items():
        yield BASE_LEVEL, b, agg
    for k in range(BASE_LEVEL + 1, top + 1):
        nxt: Dict[int, Agg] = {}
        for p in _parents(cur, k, old_top):
            left = cur.get(2 * p) or siblings.get((k - 1, 2 * p))
            right = cur.get(2 * p + 1) or siblings.get((k - 1, 2 * p + 1))
            nxt[p] = combine(left, right)
        for b, agg in nxt.items():
            yield k, b, agg
        cur = nxt


def update(sid: int, col: "Columns", top: int, old_top: int, max_step: int, stored: Sequence[int],
           stored_pts: Dict[int, tuple], siblings: Dict[Tuple[int, int], Optional[Agg]], rev_after: int):
    """Rows ``(sid, level, block, *agg)`` of every block a batch touched, and the
    series' next :class:`Tail` (None when the batch does not hold its last step).

    ``stored`` are the touched base blocks that also hold stored points, given
    in ``stored_pts`` as ``{block: (steps, values, timestamps)}``; ``siblings``
    the stored rows the rebuild needs; ``top``/``old_top`` the series' top level
    after and before the batch.
    """
    steps, vals, tss = col.steps, col.vals, col.tss
    last_block = max_step >> BASE_LEVEL
    base = dict(col.aggs)
    last_pts = None
    stored_set = set(stored)
    for b, i, j in col.slices:
        if b in stored_set:
            # Stored and new points of one block; a new value of a step wins.
            s_steps, s_vals, s_tss = stored_pts.get(b, ((), (), ()))
            merged = dict(zip(s_steps, zip(s_vals, s_tss)))
            merged.update(zip(steps[i:j], zip(vals[i:j], tss[i:j])))
            m_steps, m_vals, m_tss = arrays(merged)
            base[b] = agg_slice(m_steps, m_vals, m_tss, 0, len(m_steps))
            if b == last_block:
                last_pts = (m_steps, m_vals, m_tss)
        elif b == last_block:
            last_pts = (steps[i:j], vals[i:j], tss[i:j])
    for b in stored_set.difference(base):
        # A stored block this batch has no point in (the old last row's block).
        s_steps, s_vals, s_tss = stored_pts.get(b, ((), (), ()))
        if s_steps:
            base[b] = agg_slice(s_steps, s_vals, s_tss, 0, len(s_steps))
            if b == last_block:
                last_pts = (list(s_steps), list(s_vals), list(s_tss))
    return _rows_and_tail(sid, base, siblings, top, old_top, max_step, last_pts, rev_after)


def full(sid: int, points: Sequence[Tuple[int, float, float]], top: int, max_step: int, rev_after: int):
    """:func:`update` for a series whose rollup is built from all its (sorted) points."""
    steps, vals, tss = (list(c) for c in zip(*points)) if points else ([], [], [])
    slices = block_slices(steps)
    base = {b: agg_slice(steps, vals, tss, i, j) for b, i, j in slices}
    last_pts = None
    if slices and slices[-1][0] == max_step >> BASE_LEVEL:
        _, i, j = slices[-1]
        last_pts = (steps[i:j], vals[i:j], tss[i:j])
    return _rows_and_tail(sid, base, {}, top, top, max_step, last_pts, rev_after)


def _rows_and_tail(sid, base, siblings, top, old_top, max_step, last_pts, rev_after):
    rows = []
    built = {}
    for level, block, agg in build_levels(base, siblings, top, old_top):
        built[(level, block)] = agg
        if block < max_step >> level:  # closed: stored (the open block is composed by queries)
            rows.append((sid, level, block) + agg)
    tail = None
    if last_pts is not None:
        # The batch holds the series' last step, so every level's rightmost block
        # (and its left neighbour, the other input of its parent) is known now:
        # what the next append needs.
        tail = Tail.after(sid, rev_after, max_step, last_pts, built, siblings, top)
    return rows, tail


def full_levels(points: Sequence[Tuple[int, float, float]], top: int):
    """Every rollup block of a series from all its points (sorted by step), open ones included."""
    return build_levels(base_blocks(points), {}, top)


def open_spine(level: int, max_row: int) -> Dict[int, List[int]]:
    """The stored blocks the open block of ``level`` is made of, as ``{level: [block]}``.

    The open block of ``level`` spans rows ``(max_row >> level) << level`` to
    ``max_row``.  Cut at each lower level ``k``, that span is the closed block
    ``(max_row >> k) - 1`` when bit ``k`` of ``max_row`` is set (nothing
    otherwise), and finally the open base block, whose raw points the caller
    reads (at most ``2**BASE_LEVEL``).  Combine them with :func:`compose_open`.
    """
    return {k: [(max_row >> k) - 1] for k in range(BASE_LEVEL, level) if (max_row >> k) & 1}


def compose_open(level: int, max_row: int, stored: Dict[Tuple[int, int], Agg],
                 base_points: Sequence[Tuple[int, float, float]]) -> Optional[Agg]:
    """The open block of ``level`` from the rows :func:`open_spine` named (``stored``,
    keyed ``(level, block)``; absent: empty) and the open base block's sorted points."""
    agg = aggregate(base_points) if base_points else None
    for k in range(BASE_LEVEL, level):  # lower levels lie to the right: combine leftwards
        if (max_row >> k) & 1:
            agg = combine(stored.get((k, (max_row >> k) - 1)), agg)
    return agg


def _point_arrays(steps, vals, tss) -> tuple:
    return array("q", steps), array("d", vals), array("d", tss)


class Tail:
    """What the next append to a series needs from the database, kept in memory.

    ``points`` are the stored points ``(steps, values, timestamps)`` of the base
    block holding ``max_step`` (the open base block); ``blocks`` maps
    ``(level, block)`` to the stored row (``None``: known to be empty) of the
    closed left neighbour of every level's open block, where the open block is a
    right child (its block number is odd).  The open blocks themselves are never
    stored and not kept either: an append rebuilds them from these (see
    :meth:`Columns.touch`).  An append touches at most the open base block among
    the stored ones, and the clean siblings it needs are among those blocks or
    lie past ``max_step`` (empty), so it reads nothing.  Valid while the series'
    ``rev`` in the database is still ``rev``: any other writer bumps it.

    The points are held in arrays (``int64``, ``double``, ``double``): a fleet
    replaces ~10,000 tails a second, and as lists their every point was traversed
    by the cyclic collector's young-generation passes (15-45 ms pauses with 1,000
    ranks); arrays hold no object references, so it does not look inside them.

    ``agg``: the aggregate of ``points`` carried along one appended point at a time
    (None: not known, computed from ``points`` when the block closes).  A lockstep
    fleet closes a base block on every series in the same second; with the
    aggregate at hand that second's work per series is the row and the next tail,
    not a pass over the block's 64 points.
    """

    __slots__ = ("sid", "rev", "max_step", "block", "points", "blocks", "agg", "shift")

    def __init__(self, sid, rev, max_step, points, blocks, agg: Optional[Agg] = None, shift: int = 0):
        self.shift = shift  # the series' phase: every row here is moved by it (module doc)
        self.sid = sid
        self.rev = rev
        self.max_step = max_step
        self.block = max_step >> BASE_LEVEL
        self.points = points
        self.blocks = blocks
        self.agg = agg

    @classmethod
    def after(cls, sid: int, rev: int, max_step: int, points, built: Dict[Tuple[int, int], Agg],
              siblings: Dict[Tuple[int, int], Optional[Agg]], top: int) -> "Tail":
        """The tail after a batch that held the series' last step ``max_step``.

        Every level's open block was rebuilt (it holds that step), so its parent
        was too, and its left neighbour was rebuilt or was a sibling the rebuild
        needed: one found in neither is empty.
        """
        blocks: Dict[Tuple[int, int], Optional[Agg]] = {}
        for k in range(BASE_LEVEL, top + 1):
            r = max_step >> k
            if r & 1:
                key = (k, r - 1)
                blocks[key] = built.get(key) or siblings.get(key)
        # The open base block was built too: the aggregate of ``points``.
        return cls(sid, rev, max_step, _point_arrays(*points), blocks,
                   built.get((BASE_LEVEL, max_step >> BASE_LEVEL)))

    def update(self, col: Columns, top: int, old_top: int, max_step: int, stored: Sequence[int], rev_after: int):
        """:func:`update` with the stored points and rows this tail holds."""
        if len(col.steps) == 1 and top == old_top and col.steps[0] > self.max_step:
            done = self.append_one(col, top, rev_after)
            if done is not None:
                return done
        rows, tail = update(self.sid, col, top, old_top, max_step, stored, {self.block: self.points} if stored else {},
                            self.blocks, rev_after)
        if tail is not None:
            tail.shift = self.shift
        return rows, tail

    def extended(self, col: Columns, rev_after: int) -> "Tail":
        """The next tail after points appended inside the open base block (they close
        nothing, so they write no row)."""
        ps, pv, pt = self.points
        agg = self.agg
        if agg is not None:
            agg = combine(agg, col.aggs[self.block])
        return Tail(self.sid, rev_after, col.steps[-1],
                    (ps + array("q", col.steps), pv + array("d", col.vals), pt + array("d", col.tss)), self.blocks,
                    agg, self.shift)

    def extended_point(self, row: int, col: Columns, rev_after: int) -> "Tail":
        """:meth:`extended` for the one point of ``col`` (in the series' own rows) at the
        moved row ``row``: the same tail, without moving ``col`` first (:meth:`Columns.shifted`
        costs as much again, and an exporter's request makes one such append per metric)."""
        v, ts = col.vals[0], col.tss[0]
        agg = self.agg
        if agg is not None:
            agg = combine(agg, _moved_point(col.aggs[col.steps[0] >> BASE_LEVEL], row))
        ps, pv, pt = self.points
        return Tail(self.sid, rev_after, row, (ps + array("q", (row,)), pv + array("d", (v,)), pt + array("d", (ts,))),
                    self.blocks, agg, self.shift)

    def append_one(self, col: Columns, top: int, rev_after: int):
        """:func:`update`'s rows and next tail for one point appended past ``max_step``
        (an exporter's request: one point per metric), or None when this tail lacks a
        block it needs.

        The same rows and tail, without rebuilding the open blocks: a point that
        stays in the open base block closes nothing, so it writes no row and the
        next tail is this one with the point added (most points: a block spans
        64 rows).  A point past it closes the open block of every level up to
        where the two rows share a block; each of those is final now, built
        bottom-up from the base block's points (once per 64 rows) and the closed
        left neighbours this tail holds, exactly as :func:`build_levels` would.
        """
        row = col.steps[0]
        if row >> BASE_LEVEL == self.block:
            return [], self.extended(col, rev_after)
        ps, pv, pt = self.points
        old_max = self.max_step
        blocks = self.blocks
        missing = blocks  # a sentinel: "not in this tail"
        sid = self.sid
        rows = []
        nxt: Dict[Tuple[int, int], Optional[Agg]] = {}
        agg = self.agg  # the old open base block, final
        if agg is None and ps:
            agg = agg_slice(ps, pv, pt, 0, len(ps))
        k = BASE_LEVEL
        while True:
            ob = old_max >> k
            r = row >> k
            if ob == r:
                break  # the point lands in this level's open block, and so in every one above
            if agg is not None:
                rows.append((sid, k, ob) + agg)
            if r & 1:
                # The new open block's left neighbour: the block just closed, or one
                # between the two rows (empty).
                nxt[(k, r - 1)] = agg if r - 1 == ob else None
            if k == top:
                break
            # The old open block one level up: its closed left child (if any), then this one.
            if ob & 1:
                left = blocks.get((k, ob - 1), missing)
                if left is missing:
                    return None
                agg = combine(left, agg)
            k += 1
        for j in range(k, top + 1):
            r = row >> j
            if r & 1:
                # Unchanged open block from here up: so is its left neighbour.
                left = blocks.get((j, r - 1), missing)
                if left is missing:
                    return None
                nxt[(j, r - 1)] = left
        return rows, Tail(sid, rev_after, row, _point_arrays(col.steps, col.vals, col.tss), nxt,
                          col.aggs[row >> BASE_LEVEL], self.shift)

    def covers(self, rev: int, max_step: int, stored: Sequence[int], needs: Dict[int, List[int]]) -> bool:
        """True when this tail answers every read of an append at ``rev``."""
        if rev != self.rev or max_step != self.max_step:
            return False
        if stored and (len(stored) != 1 or stored[0] != self.block):
            return False
        blocks = self.blocks
        for k, bs in needs.items():
            for b in bs:
                if (k, b) not in blocks and (b << k) <= max_step:
                    return False
        return True
