"""The storage interface and the logic both databases share.

Backends (:mod:`.sqlite`, :mod:`.postgres`) provide connections, the schema and
the few statements whose SQL differs; ingest bookkeeping (new-versus-updated
counts, the per-series summary, rollups) and the query logic live here once.
SQL in this module uses ``?`` placeholders; the PostgreSQL backend rewrites them.

Units: point timestamps are stored as epoch **milliseconds** (double), like
every timestamp the query API returns.

A point is identified by its series and its W&B history **row** (``_step``, an
integer); its chart **step** (the value of its ``define_metric`` step metric, or
the row) is a double stored beside it.  Everything keyed, bucketed or rolled up
here (point lookups, rollups, ``after_row``) works on rows; rollup.py's
"steps" are rows.  NaN values are stored as SQL NULL in
SQLite (it cannot store NaN) and as NaN in PostgreSQL; both read back as NaN.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import orjson

from . import rollup

log = logging.getLogger("primus_lens.server")

#: (workload_uid, data_source, metric_name, rank, run_id): one series of points.
SeriesKey = Tuple[str, str, str, int, str]
KEY_COLS = "workload_uid, data_source, metric_name, rank, run_id"
#: The summary columns of a new series row, after KEY_COLS (rows go 0.. max_row, steps min_step.. max_step).
SERIES_SUMMARY_COLS = "count, min_row, max_row, first_ts, last_ts, has_rollup, min_step, max_step, step_is_row"
ROLLUP_COLS = ("n, nf, first_row, first_value, first_ts, last_row, last_value, last_ts, "
               "min_row, min_value, min_ts, max_row, max_value, max_ts, time_min, time_max")
#: Columns of a point row, in the order every backend writes them.
POINT_COLS = "series_id, row_index, step, value, timestamp"
LIVE_WINDOW_MS = 60_000.0


@dataclass
class MetricsBatch:
    """One validated ``/wandb/metrics`` body: request-level fields and its points.

    ``series`` maps a metric name to ``{row: (value, timestamp_ms, step)}``;
    building it as dicts is what makes the last duplicate of a row win.
    ``rejected`` are the points refused one by one (``{"index", "field", "error",
    "message"}``, at most :data:`MAX_REJECTED_LISTED`), ``rejected_count`` all of
    them; ``exporter`` the exporter's health counters, when it sent them.
    """

    workload_uid: str
    source: str
    run_id: str
    rank: int
    pod_name: str
    pod_uid: str
    namespace: str
    series: Dict[str, Dict[int, Tuple[float, float, float]]] = field(default_factory=dict)
    rejected: List[dict] = field(default_factory=list)
    rejected_count: int = 0
    exporter: Optional[Dict[str, int]] = None


#: Rejected points listed in an answer (``rejected_count`` counts all of them).
MAX_REJECTED_LISTED = 100


@dataclass
class IngestResult:
    """What one ingest transaction stored."""

    count: int = 0
    inserted: int = 0
    detections: int = 0
    runs: int = 0


_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)
#: Sort keys of ``(step, value, ts, row)`` points per ``x`` (None: already in row order).
_ORDER = {"step": itemgetter(0, 3), "row": None, "time": itemgetter(2, 3)}


def point_rows(sid: int, pts: Dict[int, Tuple[float, float, float]]) -> Iterator[tuple]:
    """``(sid, row, step, value, ts)`` rows (:data:`POINT_COLS`) of one series'
    ``{row: (value, ts, step)}``, built by C-level iterators (no Python frame per row)."""
    vts = pts.values()
    return zip(repeat(sid), pts.keys(), map(_third, vts), map(_first, vts), map(_second, vts))


def _by_block(points: Sequence[Tuple[int, float, float]], level: int) -> Dict[int, tuple]:
    """Sorted ``(step, value, ts)`` points as ``{block: (steps, values, timestamps)}``."""
    if not points:
        return {}
    steps, vals, tss = (list(c) for c in zip(*points))
    return {b: (steps[i:j], vals[i:j], tss[i:j]) for b, i, j in rollup.block_slices(steps, level)}


def _nan(v):
    """SQLite returns NULL for a stored NaN."""
    return math.nan if v is None else v


def _json(v) -> Optional[str]:
    return None if v is None else orjson.dumps(v).decode()


def _unjson(v):
    return None if v is None else orjson.loads(v)


class Store:
    """A Lens database.  Thread-safe: ingest may be called from many threads."""

    kind = "?"
    #: ingest requests processed at once (see app.py: more only adds GIL contention)
    ingest_concurrency = 1
    #: exceptions after which a whole ingest transaction is retried
    retry_errors: tuple = ()
    _rollup_min_points = rollup.ROLLUP_MIN_POINTS

    def __init__(self) -> None:
        self._tails = rollup.TailCache()
        self._sids = rollup.IdCache()  # series key -> id (never changes once assigned)
        #: what /health reports under "storage": work done, retries and background work
        self.counters: Dict[str, int] = {"ingest_transactions": 0, "points_inserted": 0, "ingest_retries": 0}

    def stats(self) -> Dict[str, Any]:
        """Counters of this process's store (retries, background maintenance)."""
        return dict(self.counters)

    # -- to be provided by backends -------------------------------------------------

    @contextmanager
    def write_tx(self) -> Iterator[Any]:  # pragma: no cover - abstract
        """A cursor inside one write transaction (committed on exit)."""
        raise NotImplementedError
        yield

    @contextmanager
    def read_cursor(self) -> Iterator[Any]:  # pragma: no cover - abstract
        """A cursor for reads."""
        raise NotImplementedError
        yield

    def _write_points(self, cur, new: List[Tuple[int, dict, Any]], updates: List[tuple]) -> None:  # pragma: no cover
        """Insert ``new`` points (per series: ``(id, {row: (value, ts, step)}, encoded)``,
        proven absent while this transaction holds the series; ``encoded`` is
        :meth:`_encode_points` of the two, or None) and upsert ``updates`` rows
        ``(series_id, row_index, step, value, timestamp)``."""
        raise NotImplementedError

    def _encode_points(self, sid: int, pts: Dict[int, Tuple[float, float, float]]) -> Any:
        """A series' points in the form :meth:`_write_points` inserts, built before
        the write transaction so that the work is not done under its locks."""
        return None

    def _lock_series(self, cur, keys: Sequence[SeriesKey]) -> None:
        """Serialise writers of the same series (no-op where writes are serial)."""

    def close(self) -> None:  # pragma: no cover - abstract
        """Release connections."""

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.read_cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()

    def _q(self, sql: str) -> str:
        return sql

    def _ex(self, cur, sql, params=()):
        cur.execute(self._q(sql), params)
        return cur

    def _many(self, cur, sql, rows):
        if rows:
            cur.executemany(self._q(sql), rows)

    # -- ingest ---------------------------------------------------------------------

    def ingest_many(self, parts: Sequence[Tuple[Sequence[MetricsBatch], Sequence[dict], Sequence[dict]]]
                    ) -> List[Any]:
        """Group commit: store the ``(metrics, detections, runs)`` of several requests in
        one transaction; return each request's :class:`IngestResult`, or the exception
        that refused it.

        The same as storing them one after another in this order (a later request's
        point, pod or run wins; a point is counted ``inserted`` by the first request
        that wrote it), but one transaction's fixed cost (BEGIN, the workload and pod
        upserts, the commit) and one multi-row INSERT serve all of them.  Should the
        shared transaction fail, each request is stored alone, so one request's bad
        data fails only that request.
        """
        if len(parts) == 1:
            try:
                return [self.ingest(*parts[0])]
            except Exception as e:  # the caller answers it; nothing else was in the transaction
                return [e]
        # Each request's points per series key (a request's own repeats merged as
        # ingest merges them), in request order.
        owners: Dict[SeriesKey, Dict[int, dict]] = {}
        for i, (metrics, _, _) in enumerate(parts):
            for b in metrics:
                for name, pts in b.series.items():
                    mine = owners.setdefault((b.workload_uid, b.source, name, b.rank, b.run_id), {})
                    have = mine.get(i)
                    mine[i] = pts if have is None else {**have, **pts}
        existing: Dict[SeriesKey, set] = {}
        try:
            self.ingest([b for p in parts for b in p[0]], [d for p in parts for d in p[1]],
                        [r for p in parts for r in p[2]], existing_out=existing)
        except Exception as e:
            log.warning("group commit of %d requests failed (%s: %s); storing each alone", len(parts),
                        type(e).__name__, e)
            self.counters["group_commit_fallbacks"] = self.counters.get("group_commit_fallbacks", 0) + 1
            out: List[Any] = []
            for p in parts:
                try:
                    out.append(self.ingest(*p))
                except Exception as e1:
                    out.append(e1)
            return out
        results = [IngestResult(detections=len(d), runs=len(r)) for _, d, r in parts]
        for key, mine in owners.items():
            ex = existing.get(key)
            if len(mine) == 1 and not ex:  # the rule: one rank's series, appended
                for i, pts in mine.items():
                    results[i].count += len(pts)
                    results[i].inserted += len(pts)
                continue
            seen = set(ex) if ex else set()
            for i, pts in mine.items():
                new = pts.keys() - seen
                results[i].count += len(pts)
                results[i].inserted += len(new)
                seen |= new
        return results

    def ingest(self, metrics: Sequence[MetricsBatch] = (), detections: Sequence[dict] = (),
               runs: Sequence[dict] = (), existing_out: Optional[Dict[SeriesKey, set]] = None) -> IngestResult:
        """Store validated parts in one transaction; return what was stored.

        ``existing_out``: filled with the rows of each series that were stored before
        (only series that had any), for :meth:`ingest_many`'s per-request counts."""
        now = time.time() * 1000.0
        series: Dict[SeriesKey, Dict[int, Tuple[float, float, float]]] = {}
        workloads: Dict[str, bool] = {}
        pods: Dict[Tuple[str, str], tuple] = {}
        exporters: Dict[Tuple[str, str, int], tuple] = {}
        merged: set = set()
        for b in metrics:
            workloads[b.workload_uid] = workloads.get(b.workload_uid, False) or bool(b.series)
            if b.pod_name:
                pods[(b.workload_uid, b.pod_name)] = (b.workload_uid, b.pod_name, b.pod_uid, b.namespace, now)
            if b.exporter is not None:
                exporters[(b.workload_uid, b.pod_name, b.rank)] = (b.workload_uid, b.pod_name, b.rank,
                                                                   _json(b.exporter), now)
            for name, pts in b.series.items():
                key = (b.workload_uid, b.source, name, b.rank, b.run_id)
                have = series.get(key)
                if have is None:
                    series[key] = pts
                else:
                    if key not in merged:
                        # A copy: the first body's own dict stays as it came (ingest_many
                        # counts each request's points from it).
                        have = series[key] = dict(have)
                        merged.add(key)
                    have.update(pts)  # a later body of the same batch wins
        for d in detections:
            workloads.setdefault(d["workload_uid"], False)
            if d.get("pod_name"):
                pods[(d["workload_uid"], d["pod_name"])] = (d["workload_uid"], d["pod_name"], d.get("pod_uid", ""),
                                                           d.get("namespace", ""), now)
        for r in runs:
            workloads.setdefault(r["workload_uid"], False)
            if r.get("pod_name"):
                pods[(r["workload_uid"], r["pod_name"])] = (r["workload_uid"], r["pod_name"], r.get("pod_uid", ""),
                                                           "", now)
        # Sorted columns and per-block aggregates of every series, computed before
        # the write transaction (see rollup.Columns).
        columns = {key: rollup.Columns(pts) for key, pts in series.items()}
        pre = self._precompute_rollups(columns)
        # Insert rows of series whose id is known, on the likely assumption that
        # every point is new (an append); the transaction uses them only then.
        encoded = {}
        for key, pts in series.items():
            sid = self._sids.get(key)
            if sid is not None:
                encoded[key] = (sid, self._encode_points(sid, pts))
        for attempt in range(5):
            try:
                if existing_out is not None:
                    existing_out.clear()  # a retried transaction reads them again
                result = self._ingest_tx(now, series, columns, pre, encoded, workloads, pods, detections, runs,
                                         exporters, existing_out)
                self.counters["ingest_transactions"] += 1
                self.counters["points_inserted"] += result.inserted
                return result
            except self.retry_errors:
                # PostgreSQL may abort one of two colliding transactions; the whole
                # batch is retried, so the client still sees one answer.
                self.counters["ingest_retries"] += 1
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _ingest_tx(self, now, series, columns, pre, encoded, workloads, pods, detections, runs,
                   exporters, existing_out=None) -> IngestResult:
        result = IngestResult()
        tails: list = []
        sids: dict = {}
        with self.write_tx() as cur:
            self._lock_series(cur, sorted(series))
            if series:
                result.inserted = self._ingest_points(cur, series, columns, pre, encoded, tails, sids,
                                                      existing_out)
                result.count = sum(len(v) for v in series.values())
            # The workload and pod rows come after the points: every batch of a
            # workload updates its one workloads row, and PostgreSQL holds that row
            # lock until commit, so taking it first serialised all the ranks of a
            # workload over their whole transactions (rollup maintenance included).
            self._many(cur, "INSERT INTO workloads (workload_uid, first_seen, last_update, last_point_at) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT (workload_uid) DO UPDATE SET "
                            "last_update = excluded.last_update, "
                            "last_point_at = COALESCE(excluded.last_point_at, workloads.last_point_at)",
                       sorted((uid, now, now, now if has_points else None) for uid, has_points in workloads.items()))
            self._many(cur, "INSERT INTO pods (workload_uid, pod_name, pod_uid, namespace, last_seen) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (workload_uid, pod_name) DO UPDATE SET "
                            "pod_uid = CASE WHEN excluded.pod_uid = '' THEN pods.pod_uid ELSE excluded.pod_uid END, "
                            "namespace = CASE WHEN excluded.namespace = '' THEN pods.namespace "
                            "ELSE excluded.namespace END, last_seen = excluded.last_seen",
                       [pods[k] for k in sorted(pods)])
            # The latest counters of each exporter process (pod, rank) replace its last report.
            self._many(cur, "INSERT INTO exporter_stats (workload_uid, pod_name, rank, stats, reported_at) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (workload_uid, pod_name, rank) DO UPDATE SET "
                            "stats = excluded.stats, reported_at = excluded.reported_at",
                       [exporters[k] for k in sorted(exporters)])
            for d in detections:
                self._insert_detection(cur, d, now)
            result.detections = len(detections)
            for r in runs:
                self._upsert_run(cur, r, now)
            result.runs = len(runs)
        # Committed: only now may the next batch of these series trust the tails
        # (and the ids of series this transaction created exist).
        self._tails.put(tails)
        self._sids.put(sids)
        return result

    def _ingest_points(self, cur, series: Dict[SeriesKey, Dict[int, Tuple[float, float, float]]],
                       columns: Dict[SeriesKey, rollup.Columns], pre: dict, encoded: dict, tails: list,
                       sids: dict, existing_out: Optional[dict] = None) -> int:
        keys = sorted(series)
        summaries = self._load_summaries(cur, keys)
        update_rows: List[tuple] = []
        new_series: List[tuple] = []
        inserted_total = 0
        plans = []
        for key in keys:
            pts = series[key]
            s = summaries.get(key)
            col = columns[key]
            existing: set = set()
            b_min, b_max = col.steps[0], col.steps[-1]
            if s is not None and b_min <= s[2] and b_max >= s[1]:
                # Only rows inside the series' known range can already exist, so the
                # common append path never reads back points (nor loops over them).
                lo, hi = s[1], s[2]
                amb = [st for st in pts if lo <= st <= hi]
                if amb:
                    existing = self._existing_steps(cur, s[6], amb)
                    if existing and existing_out is not None:
                        existing_out[key] = existing
            new = len(pts) - len(existing)
            inserted_total += new
            tss = col.tss
            n_total = new + (s[0] if s else 0)
            min_row = b_min if s is None else min(s[1], b_min)
            max_row = b_max if s is None else max(s[2], b_max)
            first_ts = min(tss) if s is None else min(s[3], min(tss))
            last_ts = max(tss) if s is None else max(s[4], max(tss))
            had_rollup = bool(s[5]) if s else False
            has_rollup = had_rollup or n_total > self._rollup_min_points
            summary = (n_total, min_row, max_row, first_ts, last_ts, 1 if has_rollup else 0)
            # The step range only ever widens (a re-sent point may move a step
            # inwards): it is a bound for skipping series, not an exact range.
            s_lo, s_hi = col.step_range
            if s is not None:
                s_lo, s_hi = min(s_lo, s[8]), max(s_hi, s[9])
            summary += (s_lo, s_hi, 1 if col.step_is_row and (s is None or s[10]) else 0)
            if s is None:
                new_series.append(key + summary)
            else:
                update_rows.append(summary + (s[6],))
            # rev: the series' write count, which the summary UPDATE below bumps.
            rev = s[7] if s else 0
            plans.append((key, pts, existing, had_rollup, has_rollup, max_row, s[2] if s else max_row, rev))
        ids = {key: s[6] for key, s in summaries.items()}
        if new_series:
            # A new series' summary row is written first: its id is the points' key.
            ids.update(self._insert_series(cur, new_series))
        sids.update(ids)
        self._many(cur, "UPDATE series SET count = ?, min_row = ?, max_row = ?, first_ts = ?, last_ts = ?, "
                        "has_rollup = ?, min_step = ?, max_step = ?, step_is_row = ?, rev = rev + 1 WHERE id = ?",
                   update_rows)
        new_rows: List[Tuple[int, dict]] = []
        rows: List[tuple] = []
        rollup_work = []
        ready: list = []
        for key, pts, existing, had_rollup, has_rollup, max_row, old_max, rev in plans:
            sid = ids[key]
            if existing:
                new_rows.append((sid, {st: vt for st, vt in pts.items() if st not in existing}, None))
                rows.extend((sid, st, pts[st][2], pts[st][0], pts[st][1]) for st in existing)
            else:
                enc = encoded.get(key)
                new_rows.append((sid, pts, enc[1] if enc is not None and enc[0] == sid else None))
            if has_rollup:
                p = pre.get(key)
                if p is not None and had_rollup and p[0] == rev and p[1] == old_max:
                    # Computed before the transaction from the tail this state matches.
                    ready.append(p[2:])
                    continue
                # A new series keeps rev 0; an updated one now has rev + 1.
                stored = key in summaries
                state = "update" if had_rollup else ("rebuild" if stored else "new")
                rollup_work.append((sid, state, columns[key], max_row, old_max, rev, rev + 1 if stored else 0))
        self._write_points(cur, new_rows, rows)
        if rollup_work or ready:
            self._maintain_rollups(cur, rollup_work, ready, tails)
        return inserted_total

    def _insert_series(self, cur, rows: List[tuple]) -> Dict[SeriesKey, int]:
        """Insert summary rows of series not stored yet; return their ids."""
        self._many(cur, f"INSERT INTO series ({KEY_COLS}, {SERIES_SUMMARY_COLS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        keys = [tuple(r[:5]) for r in rows]
        return {k: s[6] for k, s in self._load_summaries(cur, keys).items()}

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
            if tail is None or col.steps[0] <= tail.max_step:
                continue
            top, old_top, stored, needs = col.touch(tail.max_step)
            if tail.covers(tail.rev, tail.max_step, stored, needs):
                rows, nxt = tail.update(col, top, old_top, col.steps[-1], stored, tail.rev + 1)
                out[key] = (tail.rev, tail.max_step, rows, nxt)
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
        """
        bl = rollup.BASE_LEVEL
        plans = []
        raw_requests: List[Tuple[int, int, int]] = []
        sibling_requests: List[Tuple[int, Dict[int, List[int]]]] = []
        for sid, state, col, max_step, old_max, rev_before, rev_after in work:
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
            if tail is None:
                for lo, hi in rollup.block_runs(stored, bl):
                    raw_requests.append((sid, lo, hi))
                if needs:
                    sibling_requests.append((sid, needs))
            plans.append((sid, top, old_top, max_step, col, stored, tail, rev_after))
        raw_by_sid = self._fetch_raw_many(cur, raw_requests)
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

    def _load_summaries(self, cur, keys: Sequence[SeriesKey]) -> Dict[SeriesKey, tuple]:
        """``key -> (count, min_row, max_row, first_ts, last_ts, has_rollup, id, rev, min_step, max_step,
        step_is_row)`` of stored series."""
        out = {}
        # Grouped by everything but the metric name (a batch is usually one rank of
        # one run): the lookups then use the whole unique key, and a workload's
        # other ranks' series are not read.
        groups: Dict[Tuple[str, str, int, str], List[str]] = {}
        for k in keys:
            groups.setdefault((k[0], k[1], k[3], k[4]), []).append(k[2])
        if len(groups) > 1:
            groups = self._load_summaries_of_ranks(cur, keys, groups, out)
        for (uid, src, rank, run_id), names in groups.items():
            names = sorted(set(names))
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                self._ex(cur, f"SELECT {KEY_COLS}, count, min_row, max_row, first_ts, last_ts, has_rollup, id, "
                              "rev, min_step, max_step, step_is_row FROM series WHERE workload_uid = ? "
                              "AND data_source = ? AND rank = ? AND run_id = ? "
                              f"AND metric_name IN ({', '.join('?' * len(chunk))})",
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
            self._ex(cur, f"SELECT {KEY_COLS}, count, min_row, max_row, first_ts, last_ts, has_rollup, id, "
                          "rev, min_step, max_step, step_is_row FROM series WHERE workload_uid = ? "
                          f"AND data_source = ? AND metric_name IN ({', '.join('?' * len(names))}) "
                          f"AND rank IN ({', '.join('?' * len(ranks))}) AND run_id = ?",
                     (uid, src, *names, *sorted(ranks), run_id))
            for r in cur.fetchall():
                k = tuple(r[:5])
                if k in wanted:
                    out[k] = tuple(r[5:])
            for rank in ranks:
                del left[(uid, src, rank, run_id)]
        return left

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

    def _fetch_raw(self, cur, sid: int, lo: Optional[int], hi: Optional[int],
                   t0: Optional[float] = None, t1: Optional[float] = None, after: Optional[int] = None,
                   nonfinite_only: bool = False, after_step: Optional[float] = None,
                   with_step: bool = False) -> List[tuple]:
        """``(row, value, ts)`` points of one series in row order (``with_step``: ``(row, value, ts, step)``),
        rows ``lo..hi`` and ``> after``."""
        sql, params = self._raw_sql(sid, lo, hi, t0, t1, after, after_step, with_step)
        if nonfinite_only:
            sql += " AND " + self._nonfinite_sql
        self._ex(cur, sql + " ORDER BY row_index", params)
        rows = cur.fetchall()
        if None in map(_second, rows):  # a NULL value is a NaN stored by SQLite
            return [(r[0], _nan(r[1])) + tuple(r[2:]) for r in rows]
        return rows  # already (step, value, ts) tuples: no per-row Python work

    @staticmethod
    def _raw_sql(sid: int, lo: Optional[int], hi: Optional[int], t0: Optional[float], t1: Optional[float],
                 after: Optional[int], after_step: Optional[float], with_step: bool) -> Tuple[str, list]:
        """The SELECT (without ORDER BY) of one series' points under the query's filters, and its parameters."""
        sql = ("SELECT row_index, value, timestamp, step" if with_step else "SELECT row_index, value, timestamp") \
            + " FROM points WHERE series_id = ?"
        params: list = [sid]
        if lo is not None:
            sql += " AND row_index BETWEEN ? AND ?"
            params += [lo, hi]
        if after is not None:
            sql += " AND row_index > ?"
            params.append(after)
        if after_step is not None:
            sql += " AND step > ?"
            params.append(after_step)
        if t0 is not None:
            sql += " AND timestamp >= ?"
            params.append(t0)
        if t1 is not None:
            sql += " AND timestamp <= ?"
            params.append(t1)
        return sql, params

    _nonfinite_sql = "(value IS NULL OR value IN (9e999, -9e999))"

    def _fetch_rollup_blocks(self, cur, sid: int, needs: Dict[int, List[int]]):
        """Stored rollup rows for ``{level: [blocks]}``, keyed ``(level, block)``.

        Point lookups one by one: in-process SQLite answers each in microseconds,
        far faster than one statement with an OR or row-value list.
        """
        out = {}
        sql = self._q(f"SELECT {ROLLUP_COLS} FROM series_rollup WHERE series_id = ? AND level = ? AND block = ?")
        for level, blocks in needs.items():
            for b in blocks:
                cur.execute(sql, (sid, level, b))
                r = cur.fetchone()
                if r is not None:
                    out[(level, b)] = self._rollup_agg(r)
        return out

    @staticmethod
    def _rollup_agg(r) -> tuple:
        r = list(r)
        r[3] = _nan(r[3])  # first value: NULL is a stored NaN
        r[6] = _nan(r[6])
        return tuple(r)

    def _write_rollup(self, cur, rows):
        cols = f"series_id, level, block, {ROLLUP_COLS}"
        sets = ", ".join(f"{c} = excluded.{c}" for c in ROLLUP_COLS.split(", "))
        self._many(cur, f"INSERT INTO series_rollup ({cols}) VALUES ({', '.join('?' * 19)}) "
                        f"ON CONFLICT (series_id, level, block) DO UPDATE SET {sets}", rows)

    def _insert_detection(self, cur, d: dict, now: float) -> None:
        det = d.get("detection") or {}
        method = det.get("method") or ""
        conf = det.get("confidence")
        conf = float(conf) if conf is not None else 0.0
        reported = d.get("timestamp_ms") or now
        self._ex(cur, "INSERT INTO detections (workload_uid, source, type, version, pod_name, rank, run_id, "
                      "wrapper, base, method, confidence, evidence, hints, reported_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (d["workload_uid"], d.get("source", "wandb"), d.get("type", ""), d.get("version", ""),
                  d.get("pod_name", ""), d.get("rank", 0), d.get("run_id", ""), det.get("wrapper"), det.get("base"),
                  method, conf, _json(d.get("evidence")), _json(d.get("hints")), reported))
        # Best report per workload, kept on the workload row so listings need no scan:
        # exact beats heuristic, then one naming both layers (wrapper and base) beats one
        # naming fewer, then higher confidence, then newer.
        self._ex(cur, "SELECT det_method, det_confidence, det_reported_at, det_wrapper, det_base "
                      "FROM workloads WHERE workload_uid = ?", (d["workload_uid"],))
        row = cur.fetchone()
        cur_rank = ((row[0] == "exact", (row[3] is not None) + (row[4] is not None), row[1] or 0.0, row[2] or 0.0)
                    if row and row[0] is not None else None)
        new_rank = (method == "exact", bool(det.get("wrapper")) + bool(det.get("base")), conf, reported)
        if cur_rank is None or new_rank >= cur_rank:
            self._ex(cur, "UPDATE workloads SET det_wrapper = ?, det_base = ?, det_method = ?, det_confidence = ?, "
                          "det_reported_at = ?, det_evidence = ?, det_hints = ? WHERE workload_uid = ?",
                     (det.get("wrapper"), det.get("base"), method, conf, reported, _json(d.get("evidence")),
                      _json(d.get("hints")), d["workload_uid"]))

    _RUN_FIELDS = ("project", "name", "entity", "grp", "mode", "status", "exit_code", "source", "rank")

    def _upsert_run(self, cur, r: dict, now: float) -> None:
        uid, run_id = r["workload_uid"], r.get("run_id", "")
        ts = r.get("timestamp_ms") or now
        self._ex(cur, "SELECT project, name, entity, grp, mode, status, exit_code, source, rank, tags, config, "
                      "summary, started_at, finished_at FROM runs WHERE workload_uid = ? AND run_id = ?",
                 (uid, run_id))
        row = cur.fetchone()
        old = dict(zip(self._RUN_FIELDS + ("tags", "config", "summary", "started_at", "finished_at"), row)) \
            if row else {}
        new = dict(old)
        for f in self._RUN_FIELDS:
            src = "group" if f == "grp" else f
            if r.get(src) is not None:
                new[f] = r[src]
        if r.get("tags") is not None:
            new["tags"] = _json(r["tags"])
        for f in ("config", "summary"):
            if r.get(f) is not None:
                merged = _unjson(old.get(f)) or {}
                merged.update(r[f])
                new[f] = _json(merged)
        event = r.get("event")
        status = r.get("status")
        if not row:
            new["started_at"] = ts
            new.setdefault("status", "running")
            if new.get("status") is None:
                new["status"] = "running"
        if event == "finished" or status in ("finished", "failed", "crashed", "killed"):
            new["finished_at"] = ts
            if status is None:
                new["status"] = "finished"
        vals = (uid, run_id, new.get("project"), new.get("name"), new.get("entity"), new.get("grp"),
                new.get("mode"), new.get("status"), new.get("exit_code"), new.get("source") or "wandb",
                new.get("rank") or 0, new.get("tags"), new.get("config"), new.get("summary"),
                new.get("started_at"), new.get("finished_at"), ts)
        self._ex(cur, "INSERT INTO runs (workload_uid, run_id, project, name, entity, grp, mode, status, exit_code, "
                      "source, rank, tags, config, summary, started_at, finished_at, updated_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (workload_uid, run_id) DO UPDATE SET project = excluded.project, "
                      "name = excluded.name, entity = excluded.entity, grp = excluded.grp, mode = excluded.mode, "
                      "status = excluded.status, exit_code = excluded.exit_code, source = excluded.source, "
                      "rank = excluded.rank, tags = excluded.tags, config = excluded.config, "
                      "summary = excluded.summary, started_at = excluded.started_at, "
                      "finished_at = excluded.finished_at, updated_at = excluded.updated_at", vals)

    # -- queries --------------------------------------------------------------------

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
        """Each exporter health counter summed over the latest report of every exporter process."""
        totals: Dict[str, int] = {}
        with self.read_cursor() as cur:
            self._ex(cur, "SELECT stats FROM exporter_stats")
            for (stats,) in cur.fetchall():
                for k, v in _unjson(stats).items():
                    totals[k] = totals.get(k, 0) + v
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
                pts = self._series_points(cur, sid, count, min_row, max_row, bool(has_rollup), start, end,
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
        """``(step, value, ts, row)`` of one series, in row order, downsampled to about ``max_points``."""
        if max_points is None or count <= max_points or not has_rollup or after_step is not None:
            # The raw points (with their steps); a step filter cannot use the
            # row-indexed rollup, so it downsamples what passes it.
            raw = self._fetch_raw(cur, sid, None, None, t0, t1, after, after_step=after_step, with_step=True)
            if max_points is None or len(raw) <= max_points:
                return [(p[3], p[1], p[2], p[0]) for p in raw]
            steps = {p[0]: p[3] for p in raw}
            return [(steps[p[0]], p[1], p[2], p[0]) for p in rollup.downsample_raw(raw, max_points)]
        reps = self._rollup_points(cur, sid, min_row, max_row, t0, t1, max_points, after)
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

    def _rollup_points(self, cur, sid, min_step, max_step, t0, t1, max_points, after):
        """Downsampled ``(row, value, ts)`` of a rolled-up series (here "step" is the row)."""
        lo = min_step if after is None else max(min_step, after + 1)
        hi = max_step
        if t0 is not None or t1 is not None:
            lo, hi = self._time_step_bounds(cur, sid, lo, hi, t0, t1, max_points)
            if lo is None:
                return []
        level = rollup.choose_level(lo, hi, max_points)
        if level < rollup.BASE_LEVEL:
            # Narrow step range: at most about 4 * max_points raw points.
            return rollup.downsample_raw(self._fetch_raw(cur, sid, lo, hi, t0, t1, after), max_points)
        level = min(level, rollup.top_level(max_step))
        self._ex(cur, f"SELECT block, {ROLLUP_COLS} FROM series_rollup WHERE series_id = ? AND level = ? "
                      "AND block BETWEEN ? AND ? ORDER BY block", (sid, level, lo >> level, hi >> level))
        blocks = cur.fetchall()
        out: List[tuple] = []
        for row in blocks:
            b = row[0]
            agg = self._rollup_agg(row[1:])
            b_lo, b_hi = b << level, ((b + 1) << level) - 1
            tmin, tmax = agg[14], agg[15]
            if (t0 is not None and tmax < t0) or (t1 is not None and tmin > t1):
                continue
            partial = (b_lo < lo) or (t0 is not None and tmin < t0) or (t1 is not None and tmax > t1)
            if partial:
                # An edge block cut by after_row or the time range: its own raw
                # points decide (at most 2**level of them, and only at the edges).
                raw = self._fetch_raw(cur, sid, max(b_lo, lo), b_hi, t0, t1, after)
                if raw:
                    out.extend(rollup._reps_with_nonfinite(raw))
                continue
            pts = {p[0]: p for p in rollup.representatives(agg)}
            if agg[1]:
                for p in self._fetch_raw(cur, sid, b_lo, b_hi, nonfinite_only=True):
                    pts[p[0]] = p
            out.extend(pts[s] for s in sorted(pts))
        return out

    def _time_step_bounds(self, cur, sid, lo, hi, t0, t1, max_points):
        """Step range of the points inside [t0, t1], read from a rollup level
        with about 4096 blocks, so the final level fits the filtered range."""
        level = max(rollup.BASE_LEVEL, rollup.choose_level(lo, hi, 4 * 4096))
        sql = ("SELECT MIN(block), MAX(block) FROM series_rollup WHERE series_id = ? AND level = ? "
               "AND block BETWEEN ? AND ?")
        params = [sid, level, lo >> level, hi >> level]
        if t0 is not None:
            sql += " AND time_max >= ?"
            params.append(t0)
        if t1 is not None:
            sql += " AND time_min <= ?"
            params.append(t1)
        self._ex(cur, sql, params)
        r = cur.fetchone()
        if r is None or r[0] is None:
            return None, None
        return max(lo, r[0] << level), min(hi, ((r[1] + 1) << level) - 1)

    # -- deletion (DELETE /api/v1/workloads/{uid}, serve --retention-days) ----------

    #: tables with a workload_uid column, in delete order (series last of the point tables)
    _WORKLOAD_TABLES = ("runs", "detections", "pods", "exporter_stats", "series", "workloads")

    def delete_workload(self, uid: str, updated_before: Optional[float] = None) -> Optional[Dict[str, int]]:
        """Delete everything stored for ``uid`` in one transaction; return the rows
        deleted per table, or None when the workload is unknown (or, with
        ``updated_before`` in epoch ms, was updated since)."""
        for attempt in range(5):
            try:
                return self._delete_workload_tx(uid, updated_before)
            except self.retry_errors:
                # A colliding ingest transaction (PostgreSQL) aborted this one: try again.
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _delete_workload_tx(self, uid: str, updated_before: Optional[float]) -> Optional[Dict[str, int]]:
        with self.write_tx() as cur:
            self._ex(cur, "SELECT last_update FROM workloads WHERE workload_uid = ?", (uid,))
            row = cur.fetchone()
            # Checked inside the transaction: a workload reported to since the
            # retention sweep listed it is kept.
            if row is None or (updated_before is not None and row[0] >= updated_before):
                return None
            self._ex(cur, f"SELECT {KEY_COLS} FROM series WHERE workload_uid = ?", (uid,))
            keys = sorted(tuple(r) for r in cur.fetchall())
            # The locks ingest takes on these series: a batch that already read a
            # series' summary finishes first, so it never writes points of a
            # series deleted under it.
            self._lock_series(cur, keys)
            counts: Dict[str, int] = {}
            sub = "SELECT id FROM series WHERE workload_uid = ?"
            counts["points"] = self._ex(cur, f"DELETE FROM points WHERE series_id IN ({sub})", (uid,)).rowcount
            counts["rollups"] = self._ex(cur, f"DELETE FROM series_rollup WHERE series_id IN ({sub})",
                                         (uid,)).rowcount
            for table in self._WORKLOAD_TABLES:
                if table == "series":
                    counts[table] = self._delete_series_rows(cur, uid)
                else:
                    counts[table] = self._ex(cur, f"DELETE FROM {table} WHERE workload_uid = ?", (uid,)).rowcount
        # Cached rollup tails are keyed by series id, which SQLite may hand out again.
        self._tails = rollup.TailCache(self._tails.capacity)
        self.counters["workloads_deleted"] = self.counters.get("workloads_deleted", 0) + 1
        return counts

    def _delete_series_rows(self, cur, uid: str) -> int:
        """Delete the series rows of ``uid`` (their points and rollups are gone); return how many."""
        return self._ex(cur, "DELETE FROM series WHERE workload_uid = ?", (uid,)).rowcount

    def delete_workloads_before(self, cutoff_ms: float) -> List[str]:
        """Delete every workload whose last report is older than ``cutoff_ms``
        (epoch ms); return their uids.  Each is deleted in its own transaction,
        so ingest waits for one workload at a time, not for the whole sweep."""
        with self.read_cursor() as cur:
            self._ex(cur, "SELECT workload_uid FROM workloads WHERE last_update < ? ORDER BY last_update",
                     (cutoff_ms,))
            uids = [r[0] for r in cur.fetchall()]
        return [uid for uid in uids if self.delete_workload(uid, cutoff_ms) is not None]
