"""The series summaries an ingest transaction reads: by cached id, by key (grouped per rank
or across the ranks of a run), or from what this process committed last while it is the
database's only writer (SQLite, ``PRAGMA data_version``); and which re-sent rows already exist.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .backend import Backend
from .model import KEY_COLS, SERIES_SUMMARY_COLS, SeriesKey

#: A series' key and summary as :meth:`Summaries._load_summaries` reads it (the id is column 11).
SUMMARY_READ = (f"{KEY_COLS}, count, min_row, max_row, first_ts, last_ts, has_rollup, id, rev, min_step, max_step, "
                "step_is_row")


class Summaries(Backend):
    """Series summary reads and inserts of the write side."""

    def _current_summaries(self, cur, keys: Sequence[SeriesKey]) -> Dict[SeriesKey, tuple]:
        """:meth:`_load_summaries`, answered from the summaries this process committed
        last where no other connection has written since (``_sole_writer``): a fleet's
        series are written by the process that wrote them before, and reading ~500
        summaries back took ~2 ms of a ~10 ms group commit.  Where summaries are
        ``optimistic_summaries``, this is the locked path: read them all."""
        if self.optimistic_summaries:
            return self._load_summaries(cur, keys)
        if not self.caches_summaries or not self._sole_writer(cur):
            self._summaries.clear()
            return self._load_summaries(cur, keys)
        get = self._summaries.get
        out = {}
        missing = []
        for k in keys:
            s = get(k)
            if s is None:
                missing.append(k)
            else:
                out[k] = s
        if missing:
            out.update(self._load_summaries(cur, missing))
        return out

    def _cached_summaries(self, keys) -> Optional[Dict[SeriesKey, tuple]]:
        """The summaries this process committed last of every one of ``keys``, or None
        where one is not held (``optimistic_summaries``: the UPDATE checks them)."""
        get = self._summaries.get
        out = {}
        for k in keys:
            s = get(k)
            if s is None:
                return None
            out[k] = s
        return out

    def _insert_series(self, cur, rows: List[tuple]) -> Dict[SeriesKey, int]:
        """Insert summary rows of series not stored yet; return their ids."""
        self._many(cur, f"INSERT INTO series ({KEY_COLS}, {SERIES_SUMMARY_COLS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        keys = [tuple(r[:5]) for r in rows]
        return {k: s[6] for k, s in self._load_summaries(cur, keys).items()}


    def _load_summaries(self, cur, keys: Sequence[SeriesKey]) -> Dict[SeriesKey, tuple]:
        """``key -> (count, min_row, max_row, first_ts, last_ts, has_rollup, id, rev, min_step, max_step,
        step_is_row)`` of stored series."""
        out = {}
        # Series this process wrote before (their id cached): read by primary key, all
        # in one statement.  Ids are never handed out twice, but a row may have been
        # deleted or re-keyed since (retention), so a row counts only for its own key;
        # the rest are looked up by key below.
        by_id = {}
        for k in keys:
            sid = self._sids.get(k)
            if sid is not None:
                by_id[sid] = k
        if by_id:
            for r in self._summaries_by_id(cur, list(by_id)):
                k = tuple(r[:5])
                if by_id.get(r[11]) == k:
                    out[k] = tuple(r[5:])
            if len(out) == len(keys):
                return out
        # Grouped by everything but the metric name (a batch is usually one rank of
        # one run): the lookups then use the whole unique key, and a workload's
        # other ranks' series are not read.
        groups: Dict[Tuple[str, str, int, str], List[str]] = {}
        for k in keys:
            if k not in out:
                groups.setdefault((k[0], k[1], k[3], k[4]), []).append(k[2])
        if len(groups) > 1:
            groups = self._load_summaries_of_ranks(cur, keys, groups, out)
        for (uid, src, rank, run_id), names in groups.items():
            names = sorted(set(names))
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                self._ex(cur, f"SELECT {SUMMARY_READ} FROM series WHERE workload_uid = ? "
                              "AND data_source = ? AND rank = ? AND run_id = ? "
                              f"AND metric_name IN ({', '.join('?' * len(chunk))}){self._summary_lock}",
                         (uid, src, rank, run_id, *chunk))
                for r in cur.fetchall():
                    out[tuple(r[:5])] = tuple(r[5:])
        return out

    def _load_summaries_of_ranks(self, cur, keys, groups, out) -> dict:
        """A group commit of many ranks' requests (one run, the same metric names): their
        summaries in one query over ``rank IN (...) AND metric_name IN (...)`` rather than
        one query per rank, where that cross product is not much more than the keys asked
        for (rows of it that were not asked for are dropped).  Returns the groups left."""
        by_run: Dict[Tuple[str, str, str], Dict[int, List[str]]] = {}
        for (uid, src, rank, run_id), names in groups.items():
            by_run.setdefault((uid, src, run_id), {})[rank] = names
        wanted = set(keys)
        left = dict(groups)
        for (uid, src, run_id), ranks in by_run.items():
            if len(ranks) < 2:
                continue
            names = sorted({n for ns in ranks.values() for n in ns})
            n_keys = sum(len(ns) for ns in ranks.values())
            if len(ranks) * len(names) > 2 * n_keys or len(ranks) + len(names) > 900:
                continue
            self._ex(cur, f"SELECT {SUMMARY_READ} FROM series WHERE workload_uid = ? "
                          f"AND data_source = ? AND metric_name IN ({', '.join('?' * len(names))}) "
                          f"AND rank IN ({', '.join('?' * len(ranks))}) AND run_id = ?{self._summary_lock}",
                     (uid, src, *names, *sorted(ranks), run_id))
            for r in cur.fetchall():
                k = tuple(r[:5])
                if k in wanted:
                    out[k] = tuple(r[5:])
            for rank in ranks:
                del left[(uid, src, rank, run_id)]
        return left

    def _summaries_by_id(self, cur, ids: List[int]) -> List[tuple]:
        """:data:`SUMMARY_READ` rows of the series ``ids`` that exist."""
        out: List[tuple] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self._ex(cur, f"SELECT {SUMMARY_READ} FROM series WHERE id IN ({', '.join('?' * len(chunk))})"
                          f"{self._summary_lock}", chunk)
            out.extend(cur.fetchall())
        return out

    def _existing_steps(self, cur, sid: int, steps: List[int]) -> set:
        lo, hi = min(steps), max(steps)
        found = set()
        if hi - lo + 1 <= 4 * len(steps):
            self._ex(cur, "SELECT row_index FROM points WHERE series_id = ? AND row_index BETWEEN ? AND ?",
                     (sid, lo, hi))
            found.update(r[0] for r in cur.fetchall())
        else:
            for i in range(0, len(steps), 500):
                chunk = steps[i:i + 500]
                self._ex(cur, "SELECT row_index FROM points WHERE series_id = ? "
                              f"AND row_index IN ({', '.join('?' * len(chunk))})", (sid,) + tuple(chunk))
                found.update(r[0] for r in cur.fetchall())
        return found & set(steps)
