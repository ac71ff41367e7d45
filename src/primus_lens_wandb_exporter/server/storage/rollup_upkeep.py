"""Rollup upkeep at ingest: the rollup rows of the blocks a batch touched, recomputed in
the write transaction (or before it, from the cached tail, for the common append).

The block math is in :mod:`.rollup`; this is the part that reads what it needs from the
database (stored points of touched base blocks, clean sibling rows) and writes the rows.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Dict, List, Sequence, Tuple

from . import rollup
from .backend import Backend
from .model import ROLLUP_COLS, SeriesKey

_first = itemgetter(0)


def _by_block(points: Sequence[Tuple[int, float, float]], level: int) -> Dict[int, tuple]:
    """Sorted ``(step, value, ts)`` points as ``{block: (steps, values, timestamps)}``."""
    if not points:
        return {}
    steps, vals, tss = (list(c) for c in zip(*points))
    return {b: (steps[i:j], vals[i:j], tss[i:j]) for b, i, j in rollup.block_slices(steps, level)}



class RollupUpkeep(Backend):
    """Keeps each series' rollup rows exact as batches arrive."""

    def _rolled(self, key, had: int, n_total: int) -> int:
        """A series' ``has_rollup`` after a write that leaves it ``n_total`` points, where it
        was ``had``: 0 (no rollup yet) or its rollup's phase + 1 (:func:`.rollup.phase_of`),
        fixed once the rollup is built (one built before phases existed keeps 1: phase 0)."""
        return had or (rollup.phase_of(key) + 1 if n_total > self._rollup_min_points else 0)

    def _precompute_rollups(self, columns: Dict[SeriesKey, "rollup.Columns"]) -> dict:
        """Rollup rows of appends, computed before the write transaction.

        For a series whose tail this process holds, assume the database still
        has the state the tail was cut from (no other writer since): the rows
        and next tail then follow from the tail and the batch alone.  Inside the
        transaction the series' summary confirms the assumption (same ``rev``
        and last step) or the work is redone there.  Keeps the Python work of
        the common case off SQLite's single write lock.
        """
        out = {}
        for key, col in columns.items():
            sid = self._sids.get(key)
            tail = self._tails.get(sid) if sid is not None else None
            if tail is None:
                continue
            u = col.steps[0] + tail.shift  # the tail's rows are the series' phased rows
            if u <= tail.max_step:
                continue
            if len(col.steps) == 1 and u >> rollup.BASE_LEVEL == tail.block:
                # One point appended inside the open block (an exporter's request, per metric):
                # most points.
                out[key] = (tail.rev, tail.max_step, tail.shift, [], tail.extended_point(u, col, tail.rev + 1))
                continue
            col = col.shifted(tail.shift)
            if len(col.steps) == 1:
                # One point appended past the open block.
                # append_one checks itself that the tail holds every block it needs.
                top = rollup.top_level(col.steps[0])
                if top == rollup.top_level(tail.max_step):
                    done = tail.append_one(col, top, tail.rev + 1)
                    if done is not None:
                        out[key] = (tail.rev, tail.max_step, tail.shift) + done
                        continue
            top, old_top, stored, needs = col.touch(tail.max_step)
            if tail.covers(tail.rev, tail.max_step, stored, needs):
                rows, nxt = tail.update(col, top, old_top, col.steps[-1], stored, tail.rev + 1)
                out[key] = (tail.rev, tail.max_step, tail.shift, rows, nxt)
        return out

    def _maintain_rollups(self, cur, work, ready, tails: list) -> None:
        """Recompute the rollup blocks this batch touched, for every series at once.

        Two phases so that all reads are issued together (one round trip each on
        PostgreSQL): first the stored points of the touched base blocks and the
        clean sibling rows, then the bottom-up rebuild and one bulk write.

        An append to a series this process wrote last (the common case) reads
        nothing: its :class:`rollup.Tail` (the stored points of the last base
        block and the rightmost blocks of every level, cached after the previous
        commit and valid while the series' ``rev`` is unchanged) holds all of it.
        ``ready`` holds ``(rows, tail)`` of such appends already computed before
        the transaction (see :meth:`_precompute_rollups`).

        ``work`` gives each series' rows (``col``, ``max_step``, ``old_max``) as the
        rollup sees them, moved by the series' phase ``shift`` (:mod:`.rollup`); the
        points read back are moved the same way.
        """
        bl = rollup.BASE_LEVEL
        plans = []
        raw_requests: List[Tuple[int, int, int]] = []
        sibling_requests: List[Tuple[int, Dict[int, List[int]]]] = []
        shifts: Dict[int, int] = {}
        for sid, state, col, max_step, old_max, rev_before, rev_after, shift in work:
            if shift:
                shifts[sid] = shift
            top = rollup.top_level(max_step)
            if state == "rebuild":
                # A stored series just crossed the threshold: build every block from its points.
                raw_requests.append((sid, 0, rollup.MAX_STEP))
                plans.append((sid, top, top, max_step, None, (), None, rev_after))
                continue
            if state == "new":
                # Born with a rollup: this batch is every point, nothing to read.
                plans.append((sid, top, top, max_step, col, (), None, rev_after))
                continue
            top, old_top, stored, needs = col.touch(old_max)
            tail = self._tails.usable(sid, rev_before, old_max, stored, needs)
            if tail is not None and tail.shift != shift:
                tail = None
            if tail is None:
                # Read back from the database: another writer changed the series, or the tail
                # was dropped (more live series than ``serve --rollup-tails``: /health shows it).
                self.counters["rollup_tail_reads"] = self.counters.get("rollup_tail_reads", 0) + 1
                for lo, hi in rollup.block_runs(stored, bl):
                    raw_requests.append((sid, lo - shift, hi - shift))
                if needs:
                    sibling_requests.append((sid, needs))
            plans.append((sid, top, old_top, max_step, col, stored, tail, rev_after))
        raw_by_sid = self._fetch_raw_many(cur, raw_requests)
        for sid, shift in shifts.items():
            if sid in raw_by_sid:
                raw_by_sid[sid] = [(r + shift, v, ts) for r, v, ts in raw_by_sid[sid]]
        siblings_by_sid = self._fetch_rollup_many(cur, sibling_requests)
        rows = []
        for sid, top, old_top, max_step, col, stored, tail, rev_after in plans:
            if col is None:
                r, t = rollup.full(sid, raw_by_sid.get(sid, []), top, max_step, rev_after)
            elif tail is not None:
                r, t = tail.update(col, top, old_top, max_step, stored, rev_after)
            else:
                r, t = rollup.update(sid, col, top, old_top, max_step, stored,
                                     _by_block(raw_by_sid.get(sid, ()), rollup.BASE_LEVEL) if stored else {},
                                     siblings_by_sid.get(sid, {}), rev_after)
            rows.extend(r)
            if t is not None:
                t.shift = shifts.get(sid, 0)
                tails.append(t)
        for r, t in ready:
            rows.extend(r)
            if t is not None:
                tails.append(t)
        if rows:
            self._write_rollup(cur, rows)

    def _fetch_raw_many(self, cur, requests: List[Tuple[int, int, int]]) -> Dict[int, list]:
        """Raw points of several ``(series_id, lo_step, hi_step)`` ranges, sorted per series."""
        out: Dict[int, list] = {}
        for sid, lo, hi in requests:
            out.setdefault(sid, []).extend(self._fetch_raw(cur, sid, lo, hi))
        for pts in out.values():
            pts.sort(key=_first)
        return out

    def _fetch_rollup_many(self, cur, requests) -> Dict[int, dict]:
        """Stored rollup rows for several ``(series_id, {level: [blocks]})`` requests."""
        return {key: self._fetch_rollup_blocks(cur, key, needs) for key, needs in requests}

    def _write_rollup(self, cur, rows):
        cols = f"series_id, level, block, {ROLLUP_COLS}"
        sets = ", ".join(f"{c} = excluded.{c}" for c in ROLLUP_COLS.split(", "))
        self._many(cur, f"INSERT INTO series_rollup ({cols}) VALUES ({', '.join('?' * 19)}) "
                        f"ON CONFLICT (series_id, level, block) DO UPDATE SET {sets}", rows)
