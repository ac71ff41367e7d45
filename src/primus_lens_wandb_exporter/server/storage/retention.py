"""Deleting workloads: ``DELETE /api/v1/workloads/{uid}`` and ``serve --retention-days``."""

from __future__ import annotations

import time
from typing import Dict, List, Optional

from .backend import Backend
from .caches import TailCache
from .model import KEY_COLS


class Retention(Backend):
    """Deleting a workload (every table) in one transaction, and the retention sweep."""

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
        # The "last seen" rows this process wrote are forgotten with it: the workload's next
        # batch writes its workload and pod rows again (ingest.TOUCH_EVERY_MS).  Another
        # process writes them because that batch creates the workload's series anew.
        with self.write_tx(on_commit=self._touched.clear) as cur:
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
            # series deleted under it.  A batch that used its cached summaries took
            # none of them but holds the series rows it updated (optimistic_summaries):
            # their row locks too, then (PostgreSQL; SQLite has one writer).
            self._lock_series(cur, keys)
            if self._summary_lock:
                self._ex(cur, f"SELECT id FROM series WHERE workload_uid = ?{self._summary_lock}", (uid,))
                cur.fetchall()
                # And the workload row, which a report holds from its upsert to its commit
                # (taken after the series locks: ingest's order).  Without it a run a report
                # had written but not committed outlived the delete, with no workload left.
                self._ex(cur, "SELECT last_update FROM workloads WHERE workload_uid = ? FOR UPDATE", (uid,))
                row = cur.fetchone()
                if row is None or (updated_before is not None and row[0] >= updated_before):
                    return None
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
            # Dropped under the write lock, before another ingest can begin: cached rollup
            # tails are keyed by series id, which SQLite may hand out again, and the cached
            # summaries are of series this very connection deleted (data_version does not
            # move for its own writes).  A rollback after this only costs re-reads.
            self._tails = TailCache(self._tails.capacity)
            self._summaries.clear()
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
