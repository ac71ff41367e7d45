"""The read side of the store: workloads, sources, available metrics and points (downsampled
from the rollups, or streamed)."""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ...limits import EXPORTER_COUNTERS, MAX_COUNTER
from . import downsample, rollup
from .backend import Backend
from .model import KEY_COLS, ROLLUP_COLS, _nan, _unjson

LIVE_WINDOW_MS = 60_000.0
#: Sort keys of ``(step, value, ts, row)`` points per ``x`` (None: already in row order).
_ORDER = {"step": itemgetter(0, 3), "row": None, "time": itemgetter(2, 3)}


class Queries(Backend):
    """What the query API reads."""

    def workload_exists(self, uid: str) -> bool:
        """True when anything was ever reported for ``uid``."""
        with self.read_cursor() as cur:
            self._ex(cur, "SELECT 1 FROM workloads WHERE workload_uid = ?", (uid,))
            return cur.fetchone() is not None

    def _status(self, last_point_at, n_runs, n_running, now) -> str:
        if n_runs and not n_running:
            return "finished"
        if last_point_at is not None and now - last_point_at <= LIVE_WINDOW_MS:
            return "live"
        return "idle"

    def list_workloads(self, search: str = "", sort: str = "last_update", order: str = "desc") -> List[dict]:
        """Every workload with its best detection and counts (no point scans)."""
        now = time.time() * 1000.0
        with self.read_cursor() as cur:
            sql = ("SELECT w.workload_uid, w.det_wrapper, w.det_base, w.det_method, w.det_confidence, "
                   "w.first_seen, w.last_update, w.last_point_at, "
                   "(SELECT COUNT(*) FROM runs r WHERE r.workload_uid = w.workload_uid), "
                   "(SELECT COUNT(*) FROM runs r WHERE r.workload_uid = w.workload_uid AND r.finished_at IS NULL), "
                   "(SELECT COUNT(DISTINCT rank) FROM series s WHERE s.workload_uid = w.workload_uid), "
                   "(SELECT COUNT(DISTINCT metric_name) FROM series s WHERE s.workload_uid = w.workload_uid), "
                   "(SELECT COALESCE(SUM(count), 0) FROM series s WHERE s.workload_uid = w.workload_uid) "
                   "FROM workloads w")
            params: list = []
            if search:
                sql += " WHERE LOWER(w.workload_uid) LIKE ? ESCAPE '\\'"
                esc = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                params.append(f"%{esc}%")
            self._ex(cur, sql, params)
            rows = cur.fetchall()
        out = []
        for r in rows:
            out.append({"workload_uid": r[0], "wrapper": r[1], "base": r[2], "method": r[3] or None,
                        "confidence": r[4], "runs": r[8], "ranks": r[10], "metrics": r[11], "points": int(r[12]),
                        "first_seen": r[5], "last_update": r[6], "status": self._status(r[7], r[8], r[9], now)})
        key = {"workload_uid": lambda w: w["workload_uid"], "points": lambda w: (w["points"], w["workload_uid"]),
               "last_update": lambda w: (w["last_update"], w["workload_uid"])}[sort]
        out.sort(key=key, reverse=(order == "desc"))
        return out

    def get_workload(self, uid: str) -> Optional[dict]:
        """Details of one workload, or None when unknown."""
        now = time.time() * 1000.0
        with self.read_cursor() as cur:
            self._ex(cur, "SELECT det_wrapper, det_base, det_method, det_confidence, det_reported_at, det_evidence, "
                          "det_hints, first_seen, last_update, last_point_at FROM workloads WHERE workload_uid = ?",
                     (uid,))
            w = cur.fetchone()
            if w is None:
                return None
            self._ex(cur, "SELECT run_id, project, name, config, summary, tags, status, started_at, finished_at, "
                          "rank, entity, grp, mode, exit_code, source FROM runs WHERE workload_uid = ? "
                          "ORDER BY started_at, run_id", (uid,))
            runs = [{"run_id": r[0], "project": r[1], "name": r[2], "config": _unjson(r[3]) or {},
                     "summary": _unjson(r[4]) or {}, "tags": _unjson(r[5]) or [], "status": r[6],
                     "started_at": r[7], "finished_at": r[8], "rank": r[9], "entity": r[10], "group": r[11],
                     "mode": r[12], "exit_code": r[13], "data_source": r[14]} for r in cur.fetchall()]
            self._ex(cur, "SELECT DISTINCT rank FROM series WHERE workload_uid = ? ORDER BY rank", (uid,))
            ranks = [r[0] for r in cur.fetchall()]
            self._ex(cur, "SELECT pod_name FROM pods WHERE workload_uid = ? ORDER BY pod_name", (uid,))
            pods = [r[0] for r in cur.fetchall()]
            self._ex(cur, "SELECT data_source, COUNT(DISTINCT metric_name), SUM(count) FROM series "
                          "WHERE workload_uid = ? GROUP BY data_source ORDER BY data_source", (uid,))
            src = cur.fetchall()
            self._ex(cur, "SELECT COUNT(DISTINCT metric_name) FROM series WHERE workload_uid = ?", (uid,))
            n_metrics = cur.fetchone()[0]
            self._ex(cur, "SELECT pod_name, rank, stats, reported_at FROM exporter_stats WHERE workload_uid = ? "
                          "ORDER BY pod_name, rank", (uid,))
            exporters = [{"pod_name": r[0], "rank": r[1], "stats": _unjson(r[2]), "reported_at": r[3]}
                         for r in cur.fetchall()]
        detection = None
        if w[2] is not None:
            detection = {"wrapper": w[0], "base": w[1], "method": w[2] or None, "confidence": w[3],
                         "evidence": _unjson(w[5]), "hints": _unjson(w[6]), "reported_at": w[4]}
        n_running = sum(1 for r in runs if r["finished_at"] is None)
        return {"workload_uid": uid, "detection": detection, "runs": runs, "ranks": ranks, "pods": pods,
                "data_sources": [s[0] for s in src], "points": int(sum(s[2] for s in src)), "metrics": n_metrics,
                "first_seen": w[7], "last_update": w[8], "status": self._status(w[9], len(runs), n_running, now),
                "exporters": exporters}

    def exporter_totals(self) -> Dict[str, int]:
        """Each exporter health counter summed over the latest report of every exporter process.

        Only the names of ``limits.EXPORTER_COUNTERS`` (rows stored before that list held
        any name), and each sum at most ``MAX_COUNTER``: these totals are on the open
        ``/health`` and ``/metrics``, whose JSON cannot carry an integer past 64 bits."""
        totals: Dict[str, int] = {}
        with self.read_cursor() as cur:
            self._ex(cur, "SELECT stats FROM exporter_stats")
            for (stats,) in cur.fetchall():
                for k, v in _unjson(stats).items():
                    if k in EXPORTER_COUNTERS and type(v) is int:
                        totals[k] = min(totals.get(k, 0) + v, MAX_COUNTER)
        return totals

    def sources(self, uid: str) -> List[Tuple[str, int]]:
        """``(data_source, point count)`` for a workload, from the series summary."""
        with self.read_cursor() as cur:
            self._ex(cur, "SELECT data_source, SUM(count) FROM series WHERE workload_uid = ? "
                          "GROUP BY data_source ORDER BY data_source", (uid,))
            return [(r[0], int(r[1])) for r in cur.fetchall()]

    def available(self, uid: str, source: Optional[str]) -> List[Tuple[str, List[str], int]]:
        """``(metric, [sources], point count)`` for a workload, from the series summary."""
        sql = "SELECT metric_name, data_source, SUM(count) FROM series WHERE workload_uid = ?"
        params: list = [uid]
        if source:
            sql += " AND data_source = ?"
            params.append(source)
        sql += " GROUP BY metric_name, data_source ORDER BY metric_name, data_source"
        with self.read_cursor() as cur:
            self._ex(cur, sql, params)
            rows = cur.fetchall()
        out: Dict[str, list] = {}
        for name, src, n in rows:
            e = out.setdefault(name, [name, [], 0])
            e[1].append(src)
            e[2] += int(n)
        return [tuple(v) for v in out.values()]

    def data(self, uid: str, source: str, metrics: Optional[Sequence[str]] = None,
             start: Optional[float] = None, end: Optional[float] = None, ranks: Optional[Sequence[int]] = None,
             run_id: Optional[str] = None, max_points: Optional[int] = None,
             after_step: Optional[float] = None, after_row: Optional[int] = None, x: str = "step") -> List[tuple]:
        """Points as ``(metric, rank, run_id, step, value, timestamp_ms, row)``.

        Ordered by metric, rank, run, then within a series by ``x``: ``step``
        (step, row), ``row`` or ``time`` (timestamp, row).  ``max_points`` bounds
        each series, bucketing over rows (history order).
        """
        order = _ORDER[x]
        out: List[tuple] = []
        with self.read_cursor() as cur:
            for head, s in self._data_series(cur, uid, source, metrics, start, end, ranks, run_id, after_step,
                                             after_row):
                count, min_row, max_row, first_ts, last_ts, has_rollup, sid, max_step, step_is_row = s
                pts = self._series_points(cur, sid, count, min_row, max_row, has_rollup, start, end,
                                          max_points, after_row, after_step, bool(step_is_row))
                if order is not None:
                    pts.sort(key=order)
                out.extend(head + p for p in pts)
        return out

    def _data_series(self, cur, uid, source, metrics, start, end, ranks, run_id, after_step, after_row):
        """``((metric, rank, run_id), summary)`` of the series a data query reads, in answer order,
        skipping those wholly outside the filters."""
        sql = (f"SELECT {KEY_COLS}, count, min_row, max_row, first_ts, last_ts, has_rollup, id, max_step, step_is_row "
               "FROM series WHERE workload_uid = ? AND data_source = ?")
        params: list = [uid, source]
        if metrics:
            sql += f" AND metric_name IN ({', '.join('?' * len(metrics))})"
            params.extend(metrics)
        if ranks:
            sql += f" AND rank IN ({', '.join('?' * len(ranks))})"
            params.extend(ranks)
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        sql += " ORDER BY metric_name, rank, run_id"
        self._ex(cur, sql, params)
        out = []
        for s in cur.fetchall():
            count, min_row, max_row, first_ts, last_ts, has_rollup, sid, max_step, step_is_row = s[5:]
            if (after_row is not None and max_row <= after_row) or \
                    (after_step is not None and max_step <= after_step) or \
                    (start is not None and last_ts < start) or (end is not None and first_ts > end):
                continue
            out.append(((s[2], s[3], s[4]), s[5:]))
        return out

    #: Rows per chunk of a streamed answer (:meth:`stream_data`): about 1 MiB of JSON.
    STREAM_CHUNK = 5000

    def stream_data(self, uid: str, source: str, metrics: Optional[Sequence[str]] = None,
                    start: Optional[float] = None, end: Optional[float] = None,
                    ranks: Optional[Sequence[int]] = None, run_id: Optional[str] = None,
                    after_step: Optional[float] = None, after_row: Optional[int] = None,
                    x: str = "step") -> Iterator[List[tuple]]:
        """:meth:`data` without ``max_points``, as chunks of at most :attr:`STREAM_CHUNK` rows.

        Each series is one query ordered by the database (which sorts on disk when it
        must) and read a chunk at a time, so memory does not grow with the series.
        The caller iterates in one thread: the read cursor stays open meanwhile.
        """
        with self.read_cursor() as cur:
            for head, s in self._data_series(cur, uid, source, metrics, start, end, ranks, run_id, after_step,
                                             after_row):
                sid, step_is_row = s[6], s[8]
                sql, params = self._raw_sql(sid, None, None, start, end, after_row, after_step, True)
                # The same order as data(): (step, row), row, or (timestamp, row); a series
                # whose steps are its rows is read in key order, no sort at all.
                if x == "row" or (x == "step" and step_is_row):
                    sql += " ORDER BY row_index"
                elif x == "step":
                    sql += " ORDER BY step, row_index"
                else:
                    sql += " ORDER BY timestamp, row_index"
                for rows in self._stream_rows(cur, sql, params, self.STREAM_CHUNK):
                    yield [head + (r[3], _nan(r[1]), r[2], r[0]) for r in rows]

    def _stream_rows(self, cur, sql: str, params, size: int) -> Iterator[list]:
        """The rows of ``sql`` in lists of ``size``, without holding them all (SQLite steps
        the statement per fetch)."""
        self._ex(cur, sql, params)
        while True:
            rows = cur.fetchmany(size)
            if not rows:
                return
            yield rows

    def _series_points(self, cur, sid, count, min_row, max_row, has_rollup, t0, t1, max_points, after,
                       after_step, step_is_row) -> List[tuple]:
        """``(step, value, ts, row)`` of one series, in row order, downsampled to about ``max_points``.

        ``has_rollup``: the series' column, 0 or its rollup's phase + 1 (:mod:`.rollup`)."""
        if max_points is None or count <= max_points or not has_rollup or after_step is not None:
            # The raw points (with their steps); a step filter cannot use the
            # row-indexed rollup, so it downsamples what passes it.
            raw = self._fetch_raw(cur, sid, None, None, t0, t1, after, after_step=after_step, with_step=True)
            if max_points is None or len(raw) <= max_points:
                return [(p[3], p[1], p[2], p[0]) for p in raw]
            steps = {p[0]: p[3] for p in raw}
            return [(steps[p[0]], p[1], p[2], p[0]) for p in downsample.downsample_raw(raw, max_points)]
        # The rollup's rows are the series' rows moved by its phase: in, then back out.
        o = has_rollup - 1
        reps = self._rollup_points(cur, sid, min_row + o, max_row + o, t0, t1, max_points,
                                   None if after is None else after + o, o)
        if o:
            reps = [(p[0] - o,) + tuple(p[1:]) for p in reps]
        if step_is_row:
            return [(float(p[0]), p[1], p[2], p[0]) for p in reps]
        # The rollup knows rows, not steps: the kept points' steps are looked up.
        steps = self._steps_of(cur, sid, [p[0] for p in reps])
        return [(steps[p[0]], p[1], p[2], p[0]) for p in reps]

    def _steps_of(self, cur, sid: int, rows: List[int]) -> Dict[int, float]:
        """``{row: step}`` of the given points of one series."""
        out: Dict[int, float] = {}
        for i in range(0, len(rows), 500):
            chunk = rows[i:i + 500]
            self._ex(cur, f"SELECT row_index, step FROM points WHERE series_id = ? "
                          f"AND row_index IN ({', '.join('?' * len(chunk))})", (sid,) + tuple(chunk))
            out.update(cur.fetchall())
        return out

    def _raw_moved(self, cur, sid: int, shift: int, lo: int, hi: int, t0=None, t1=None, after=None,
                   nonfinite_only: bool = False) -> List[tuple]:
        """:meth:`_fetch_raw` with rows moved by a rollup's phase ``shift``, in and out."""
        pts = self._fetch_raw(cur, sid, lo - shift, hi - shift, t0, t1, None if after is None else after - shift,
                              nonfinite_only=nonfinite_only)
        return [(p[0] + shift, p[1], p[2]) for p in pts] if shift else pts

    def _rollup_points(self, cur, sid, min_step, max_step, t0, t1, max_points, after, shift=0):
        """Downsampled ``(row, value, ts)`` of a rolled-up series (here "step" is the row),
        every row moved by the series' phase ``shift``."""
        lo = min_step if after is None else max(min_step, after + 1)
        hi = max_step
        if t0 is not None or t1 is not None:
            lo, hi = self._time_step_bounds(cur, sid, lo, hi, max_step, t0, t1, shift)
            if lo is None:
                return []
        level = downsample.choose_level(lo, hi, max_points)
        if level < rollup.BASE_LEVEL:
            # Narrow step range: at most about 4 * max_points raw points.
            return downsample.downsample_raw(self._raw_moved(cur, sid, shift, lo, hi, t0, t1, after), max_points)
        level = min(level, rollup.top_level(max_step))
        # Closed blocks are stored; the open one (it holds the last row) is composed.
        open_b = max_step >> level
        self._ex(cur, f"SELECT block, {ROLLUP_COLS} FROM series_rollup WHERE series_id = ? AND level = ? "
                      "AND block BETWEEN ? AND ? ORDER BY block",
                 (sid, level, lo >> level, min(hi >> level, open_b - 1)))
        blocks = [(row[0], self._rollup_agg(row[1:])) for row in cur.fetchall()]
        if hi >> level == open_b:
            agg = self._open_block(cur, sid, level, max_step, shift)
            if agg is not None:
                blocks.append((open_b, agg))
        out: List[tuple] = []
        for b, agg in blocks:
            b_lo, b_hi = b << level, ((b + 1) << level) - 1
            tmin, tmax = agg[14], agg[15]
            if (t0 is not None and tmax < t0) or (t1 is not None and tmin > t1):
                continue
            # A block starting before ``lo`` is cut only where points lie there: not below the
            # series' first row (the first block of a phased series, or of one not starting at 0).
            partial = (b_lo < lo and lo > min_step) or (t0 is not None and tmin < t0) or (t1 is not None and tmax > t1)
            if partial:
                # An edge block cut by after_row or the time range: its own raw
                # points decide (at most 2**level of them, and only at the edges).
                raw = self._raw_moved(cur, sid, shift, max(b_lo, lo), b_hi, t0, t1, after)
                if raw:
                    out.extend(downsample.reps_with_nonfinite(raw))
                continue
            pts = {p[0]: p for p in downsample.representatives(agg)}
            if agg[1]:
                for p in self._raw_moved(cur, sid, shift, b_lo, b_hi, nonfinite_only=True):
                    pts[p[0]] = p
            out.extend(pts[s] for s in sorted(pts))
        return out

    def _time_step_bounds(self, cur, sid, lo, hi, max_row, t0, t1, shift=0):
        """Step range of the points inside [t0, t1], read from a rollup level
        with about 4096 blocks, so the final level fits the filtered range."""
        level = max(rollup.BASE_LEVEL, downsample.choose_level(lo, hi, 4 * 4096))
        open_b = max_row >> level
        sql = ("SELECT MIN(block), MAX(block) FROM series_rollup WHERE series_id = ? AND level = ? "
               "AND block BETWEEN ? AND ?")
        params = [sid, level, lo >> level, min(hi >> level, open_b - 1)]
        if t0 is not None:
            sql += " AND time_max >= ?"
            params.append(t0)
        if t1 is not None:
            sql += " AND time_min <= ?"
            params.append(t1)
        self._ex(cur, sql, params)
        r = cur.fetchone()
        first, last = (None, None) if r is None else r
        if hi >> level == open_b:
            agg = self._open_block(cur, sid, level, max_row, shift)
            if agg is not None and (t0 is None or agg[15] >= t0) and (t1 is None or agg[14] <= t1):
                first, last = (open_b if first is None else first), open_b
        if first is None:
            return None, None
        return max(lo, first << level), min(hi, ((last + 1) << level) - 1)

    def _open_block(self, cur, sid: int, level: int, max_row: int, shift: int = 0):
        """The aggregate of the series' open block of ``level`` (the one holding its last
        row ``max_row``, never stored), or None when it holds no point: composed from at
        most one stored block per lower level and the open base block's raw points.
        ``max_row`` and the answer are moved by the series' phase ``shift``."""
        base_lo = (max_row >> rollup.BASE_LEVEL) << rollup.BASE_LEVEL
        return rollup.compose_open(level, max_row,
                                   self._fetch_rollup_blocks(cur, sid, rollup.open_spine(level, max_row)),
                                   self._raw_moved(cur, sid, shift, base_lo, max_row))
