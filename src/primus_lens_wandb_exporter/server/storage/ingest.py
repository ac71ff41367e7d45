"""The write side of the store: one ingest request (or a group of them) in one transaction.

:meth:`Ingest.ingest` merges the request's series, computes their sorted columns and
per-block rollup aggregates before the transaction (off the write lock), then in one
transaction: the points and series summaries, the rollup upkeep (:mod:`.rollup_upkeep`),
and after them the workload, pod and exporter-counter rows, then detections and runs
(:mod:`.reports`, serialised per workload by the ``workloads`` row lock taken before them:
docs/server.md "Scale out").  :meth:`Ingest.ingest_many` is the group commit.  Reading the
series summaries (and which re-sent rows exist) is :mod:`.summaries`.

It is a few lines over 400 lines on purpose: the transaction and the per-series cases of
:meth:`Ingest._ingest_points` read as one flow, and what could move out already has
(:mod:`.summaries`, :mod:`.rollup_upkeep`, :mod:`.reports`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import rollup
from .model import IngestResult, SeriesBatch, SeriesKey, StaleSummaries, _json
from .reports import Reports
from .rollup_upkeep import RollupUpkeep
from .summaries import Summaries

log = logging.getLogger("primus_lens.server")

_NONE: frozenset = frozenset()

#: How long (ms) this process leaves a workload's, pod's or exporter's "last seen" row as it wrote
#: it when nothing but the time would change (rewriting them on every request of a fleet cost 0.3 ms
#: of PostgreSQL backend time a group commit, and each took that row's lock until commit).  Longer
#: than an exporter's flush interval (1 s); far shorter than anything that reads those times (a
#: workload is "live" for 60 s after its last point).
TOUCH_EVERY_MS = 5000.0


def _by_writer(row: tuple) -> tuple:
    """Order of a new series row (key fields first) by the rank that writes it:
    workload, source, rank, run, then metric."""
    return (row[0], row[1], row[3], row[4], row[2])


class Ingest(RollupUpkeep, Reports, Summaries):
    """Storing validated requests: points, series summaries, rollups, workloads, pods,
    exporter counters, detections and runs."""

    #: :data:`TOUCH_EVERY_MS` of this store
    touch_every_ms = TOUCH_EVERY_MS

    def ingest_many(self, parts: Sequence[Tuple[Sequence[SeriesBatch], Sequence[dict], Sequence[dict]]]
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
        # The rule: every series of the group is sent by one request, once (a rank's
        # own metrics), and none of its points was stored before: then each request's
        # points are all new.  Anything else is counted point by point below.
        keys: List[SeriesKey] = []
        counts: List[int] = []
        for metrics, _, _ in parts:
            n = 0
            for b in metrics:
                uid, src, rank, run = b.workload_uid, b.source, b.rank, b.run_id
                for name, pts in b.series.items():
                    keys.append((uid, src, name, rank, run))
                    n += len(pts)
            counts.append(n)
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
        if not existing and len(set(keys)) == len(keys):
            for res, n in zip(results, counts):
                res.count = res.inserted = n
            return results
        # Each request's points per series key (a request's own repeats merged as
        # ingest merges them), in request order.
        owners: Dict[SeriesKey, Dict[int, dict]] = {}
        for i, (metrics, _, _) in enumerate(parts):
            for b in metrics:
                for name, pts in b.series.items():
                    mine = owners.setdefault((b.workload_uid, b.source, name, b.rank, b.run_id), {})
                    have = mine.get(i)
                    mine[i] = pts if have is None else {**have, **pts}
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

    def ingest(self, metrics: Sequence[SeriesBatch] = (), detections: Sequence[dict] = (),
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
        cached_ok = self.optimistic_summaries
        for attempt in range(5):
            try:
                if existing_out is not None:
                    existing_out.clear()  # a retried transaction reads them again
                result = self._ingest_tx(now, series, columns, pre, encoded, workloads, pods, detections, runs,
                                         exporters, existing_out, cached_ok)
                self.counters["ingest_transactions"] += 1
                self.counters["points_inserted"] += result.inserted
                return result
            except StaleSummaries:
                # Another writer changed a series this process had cached (optimistic_summaries):
                # again, on the locked path (summaries read FOR UPDATE: ``_summary_lock``).
                self.counters["stale_summaries"] = self.counters.get("stale_summaries", 0) + 1
                self.counters["ingest_retries"] += 1
                self._summaries.discard(series)
                cached_ok = False
                if attempt == 4:
                    raise
            except self.retry_errors:
                # PostgreSQL may abort one of two colliding transactions; the whole
                # batch is retried, so the client still sees one answer.
                self.counters["ingest_retries"] += 1
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _ingest_tx(self, now, series, columns, pre, encoded, workloads, pods, detections, runs,
                   exporters, existing_out=None, cached_ok=False) -> IngestResult:
        result = IngestResult()
        tails: list = []
        sids: dict = {}
        summaries: dict = {}
        touched: dict = {}
        born: set = set()  # workloads this transaction creates series of

        def publish():
            # Right after the commit, under SQLite's write lock: no other writer of this
            # process (a delete) can run between the commit and what is cached about it.
            self._tails.put(tails)
            self._sids.put(sids)
            self._touched.put(touched)
            if self.caches_summaries:
                self._summaries.put(summaries)

        with self.write_tx(on_commit=publish) as cur:
            # optimistic_summaries: every summary cached -> no lock, no read (the UPDATE checks)
            cached = self._cached_summaries(series) if cached_ok and series else None
            if cached is None:
                self._lock_series(cur, sorted(series))
            if series:
                result.inserted = self._ingest_points(cur, series, columns, pre, encoded, tails, sids,
                                                      summaries, existing_out, cached, born)
                result.count = sum(len(v) for v in series.values())
            workload_rows, pod_rows, exporter_rows = self._touch_rows(now, workloads, pods, exporters,
                                                                      bool(detections or runs), touched, born)
            # The workload and pod rows come after the points: every batch of a
            # workload updates its one workloads row, and PostgreSQL holds that row
            # lock until commit, so taking it first serialised all the ranks of a
            # workload over their whole transactions (rollup maintenance included).
            self._insert_rows(cur, "INSERT INTO workloads (workload_uid, first_seen, last_update, last_point_at)",
                              ("text", "float8", "float8", "float8"),
                              "ON CONFLICT (workload_uid) DO UPDATE SET last_update = excluded.last_update, "
                              "last_point_at = COALESCE(excluded.last_point_at, workloads.last_point_at)",
                              workload_rows)
            self._insert_rows(cur, "INSERT INTO pods (workload_uid, pod_name, pod_uid, namespace, last_seen)",
                              ("text", "text", "text", "text", "float8"),
                              "ON CONFLICT (workload_uid, pod_name) DO UPDATE SET "
                              "pod_uid = CASE WHEN excluded.pod_uid = '' THEN pods.pod_uid ELSE excluded.pod_uid END, "
                              "namespace = CASE WHEN excluded.namespace = '' THEN pods.namespace "
                              "ELSE excluded.namespace END, last_seen = excluded.last_seen",
                              pod_rows)
            # The latest counters of each exporter process (pod, rank) replace its last report.
            self._insert_rows(cur, "INSERT INTO exporter_stats (workload_uid, pod_name, rank, stats, reported_at)",
                              ("text", "text", "bigint", "text", "float8"),
                              "ON CONFLICT (workload_uid, pod_name, rank) DO UPDATE SET "
                              "stats = excluded.stats, reported_at = excluded.reported_at",
                              exporter_rows)
            self._insert_detections(cur, detections, now)
            result.detections = len(detections)
            self._upsert_runs(cur, runs, now)
            result.runs = len(runs)
        # Committed (publish ran): only now may the next batch of these series trust
        # the tails (and the ids of series this transaction created exist).
        return result

    def _touch_rows(self, now: float, workloads: Dict[str, bool], pods: dict, exporters: dict, reports: bool,
                    touched: dict, born: set) -> Tuple[list, list, list]:
        """The workload, pod and exporter rows this transaction writes, sorted (lock order).

        A row is left out when this process wrote it less than :attr:`touch_every_ms` ago with
        the same values but the time (a workload: that it had points; a pod: its uid and
        namespace; an exporter: its counters).  A transaction with detections or runs writes
        all its workload rows (their lock serialises a workload's reports: :mod:`.reports`), a
        workload in ``born`` (this transaction created series of it, so another process may have
        deleted it) has its row written whatever this one remembers, and a workload whose row is
        written has its pod and exporter rows written too: after a delete elsewhere, whatever
        brings the workload back (points, a report, an empty body) brings them back with it.
        ``touched`` gets what to remember of the rows written, for after the commit.
        """
        seen = self._touched.get
        every = self.touch_every_ms

        def due(key, values, uid) -> bool:
            t = seen(key)
            if t is not None and t[1] == values and t[0] <= now < t[0] + every and uid not in born:
                return False
            touched[key] = (now, values)
            return True

        workload_rows = [(uid, now, now, now if workloads[uid] else None) for uid in sorted(workloads)
                         if due(("workload", uid), workloads[uid], uid) or reports]
        written = {row[0] for row in workload_rows}
        pod_rows = [pods[k] for k in sorted(pods) if due(("pod", k), pods[k][2:4], k[0]) or k[0] in written]
        exporter_rows = [exporters[k] for k in sorted(exporters)
                         if due(("exporter", k), exporters[k][3], k[0]) or k[0] in written]
        return workload_rows, pod_rows, exporter_rows

    def _ingest_points(self, cur, series: Dict[SeriesKey, Dict[int, Tuple[float, float, float]]],
                       columns: Dict[SeriesKey, rollup.Columns], pre: dict, encoded: dict, tails: list,
                       sids: dict, summaries_out: dict, existing_out: Optional[dict] = None,
                       cached: Optional[dict] = None, born: Optional[set] = None) -> int:
        """Write the points, summaries and rollups; fill ``tails``, ``sids`` and ``summaries_out``
        (the series' new summaries) for after the commit, and ``born`` with the workloads
        of the series it creates.  ``cached``: the cached summaries."""
        keys = sorted(series)
        summaries = cached if cached is not None else self._current_summaries(cur, keys)
        update_rows: List[tuple] = []
        new_series: List[tuple] = []
        inserted_total = 0
        plans = []
        for key in keys:
            pts = series[key]
            s = summaries.get(key)
            col = columns[key]
            if s is not None and len(pts) == 1 and col.steps[0] > s[2]:
                # One point past the series' last row (an exporter's request, per
                # metric): the general path below with its cases decided (nothing
                # stored in range, every bound moves by one point).
                row, ts, st = col.steps[0], col.tss[0], col.step_range[0]
                n_total = s[0] + 1
                had_rollup = bool(s[5])
                rolled = self._rolled(key, s[5], n_total)
                summary = (n_total, s[1], row, s[3] if s[3] <= ts else ts, ts if ts > s[4] else s[4],
                           rolled, st if st <= s[8] else s[8], st if st > s[9] else s[9],
                           1 if col.step_is_row and s[10] else 0)
                inserted_total += 1
                update_rows.append(summary + (s[6], s[7]))
                plans.append((key, pts, _NONE, had_rollup, rolled, row, s[2], s[7]))
                summaries_out[key] = summary
                continue
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
            rolled = self._rolled(key, s[5] if s else 0, n_total)
            summary = (n_total, min_row, max_row, first_ts, last_ts, rolled)
            # The step range only ever widens (a re-sent point may move a step
            # inwards): it is a bound for skipping series, not an exact range.
            s_lo, s_hi = col.step_range
            if s is not None:
                s_lo, s_hi = min(s_lo, s[8]), max(s_hi, s[9])
            summary += (s_lo, s_hi, 1 if col.step_is_row and (s is None or s[10]) else 0)
            if s is None:
                new_series.append(key + summary)
            else:
                update_rows.append(summary + (s[6], s[7]))
            # rev: the series' write count, which the summary UPDATE below bumps.
            rev = s[7] if s else 0
            plans.append((key, pts, existing, had_rollup, rolled, max_row, s[2] if s else max_row, rev))
            summaries_out[key] = summary
        ids = {key: s[6] for key, s in summaries.items()}
        if new_series:
            # A new series' summary row is written first: its id is the points' key.
            # Ids go out rank by rank (keys sort metric first): every request rewrites
            # the summary rows of its rank's series, which then share a page or two
            # instead of one each (a group of 3 fleet requests dirtied ~27 series
            # pages, over a third of what its commit wrote to the WAL).
            new_series.sort(key=_by_writer)
            ids.update(self._insert_series(cur, new_series))
            if born is not None:
                born.update(k[0] for k in new_series)
        sids.update(ids)
        for key, summary in summaries_out.items():
            # SUMMARY_READ's order: the id and the rev after this write (a new series: 0).
            s = summaries.get(key)
            summaries_out[key] = summary[:6] + (ids[key], s[7] + 1 if s else 0) + summary[6:]
        self._update_summaries(cur, update_rows)
        new_rows: List[Tuple[int, dict]] = []
        rows: List[tuple] = []
        rollup_work = []
        ready: list = []
        for key, pts, existing, had_rollup, rolled, max_row, old_max, rev in plans:
            sid = ids[key]
            if existing:
                new_rows.append((sid, {st: vt for st, vt in pts.items() if st not in existing}, None))
                rows.extend((sid, st, pts[st][2], pts[st][0], pts[st][1]) for st in existing)
            else:
                enc = encoded.get(key)
                new_rows.append((sid, pts, enc[1] if enc is not None and enc[0] == sid else None))
            if rolled:
                o = rolled - 1  # the rollup works on rows moved by the series' phase
                p = pre.get(key)
                if p is not None and had_rollup and p[0] == rev and p[1] == old_max + o and p[2] == o:
                    # Computed before the transaction from the tail this state matches.
                    ready.append(p[3:])
                    continue
                stored = key in summaries  # a new series keeps rev 0; an updated one now has rev + 1
                state = "update" if had_rollup else ("rebuild" if stored else "new")
                rollup_work.append((sid, state, columns[key].shifted(o), max_row + o, old_max + o, rev,
                                    rev + 1 if stored else 0, o))
        self._write_points(cur, new_rows, rows)
        if rollup_work or ready:
            self._maintain_rollups(cur, rollup_work, ready, tails)
        return inserted_total
