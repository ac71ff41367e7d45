"""A job's requests do not rewrite their workload's, pod's and exporter's rows each time.

Every request of a fleet rewrote its workload's one row (and its pod's and exporter's) only
to move a timestamp: on PostgreSQL ~1,000 updates a second of a few rows, the third-largest
statement of a group commit.  Now a process leaves such a row as it wrote it for
``touch_every_ms`` when nothing but the time changed; anything else (points after none, new
counters, a pod's uid, a report, a delete) writes it at once.  Checked on both databases by
reading the rows back.
"""

from __future__ import annotations

from primus_lens_wandb_exporter.server import validate
from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store


def _metrics(step, stats, uid="wl-t", pod="wl-t-pod-0"):
    return SeriesBatch(uid, "wandb", "run", 0, pod, "pod-uid", "ns", {"loss": {step: (1.0, 1.7e12 + step, float(step))}},
                       exporter=stats)


def _rows(store, uid="wl-t"):
    with store.read_cursor() as cur:
        cur.execute(store._q("SELECT last_update, last_point_at FROM workloads WHERE workload_uid = ?"), (uid,))
        workload = cur.fetchone()
        cur.execute(store._q("SELECT last_seen FROM pods WHERE workload_uid = ?"), (uid,))
        pod = cur.fetchone()
        cur.execute(store._q("SELECT stats, reported_at FROM exporter_stats WHERE workload_uid = ?"), (uid,))
        exporter = cur.fetchone()
    return (tuple(workload) if workload else None, tuple(pod) if pod else None,
            tuple(exporter) if exporter else None)


def test_a_row_only_the_time_would_change_is_left_as_written(db_url):
    store = open_store(db_url)
    try:
        store.touch_every_ms = 3_600_000.0  # an hour: nothing below waits for it
        store.ingest([_metrics(0, {"spooled_points": 0})])
        first = _rows(store)
        assert first[0][1] is not None and first[1] is not None and first[2] is not None
        for step in range(1, 5):
            store.ingest_many([([_metrics(step, {"spooled_points": 0})], [], [])])
        assert _rows(store) == first  # four requests later: the same three rows
        assert store.get_workload("wl-t")["points"] == 5

        # New counters: the exporter's row at once (the workload's and pod's stay).
        store.ingest([_metrics(5, {"spooled_points": 7})])
        now = _rows(store)
        assert '"spooled_points":7' in now[2][0].replace(" ", "") and now[2][1] > first[2][1]
        assert now[:2] == first[:2]

        # A report (a run) writes its workload's row: its lock serialises the workload's reports.
        store.ingest(runs=[validate.run({"workload_uid": "wl-t", "run_id": "run", "event": "started"})])
        assert _rows(store)[0][0] > first[0][0]

        # After the window (0 here) every row is written again.
        before = _rows(store)
        store.touch_every_ms = 0.0
        store.ingest([_metrics(6, {"spooled_points": 7})])
        after = _rows(store)
        assert after[0][0] > before[0][0] and after[1][0] > before[1][0] and after[2][1] > before[2][1]
    finally:
        store.close()


def test_points_after_none_and_a_delete_write_the_rows_at_once(db_url):
    store = open_store(db_url)
    try:
        store.touch_every_ms = 3_600_000.0
        store.ingest([SeriesBatch("wl-t", "wandb", "run", 0, "wl-t-pod-0", "pod-uid", "ns", {})])
        assert _rows(store)[0][1] is None  # no points yet: not live
        store.ingest([_metrics(0, None)])
        assert _rows(store)[0][1] is not None  # the first points: last_point_at set at once

        # Deleted by this process: its next batch creates the rows again.
        assert store.delete_workload("wl-t") is not None
        assert _rows(store) == (None, None, None)
        store.ingest([_metrics(1, {"spooled_points": 0})])
        workload, pod, exporter = _rows(store)
        assert workload is not None and workload[1] is not None and pod is not None and exporter is not None
        assert store.workload_exists("wl-t")
    finally:
        store.close()


def test_a_batch_after_another_process_deleted_the_workload_starts_it_anew(db_url):
    """Two processes over one database (``serve --workers 2``, or replicas): one deletes the
    workload while the other remembers writing its rows a moment ago.  The other's next batch
    creates the workload's series again, and with them its workload, pod and exporter rows:
    before, it left them out for its 5-second window, so a job's last batch after a delete
    stayed stored but unlisted (404) and could not be deleted either."""
    a, b = open_store(db_url), open_store(db_url)
    try:
        a.touch_every_ms = 3_600_000.0  # "wrote them a moment ago", for the whole test
        a.ingest([_metrics(0, {"spooled_points": 0})])
        assert b.delete_workload("wl-t") is not None
        assert _rows(a) == (None, None, None)
        a.ingest([_metrics(1, {"spooled_points": 0})])
        workload, pod, exporter = _rows(a)
        assert workload is not None and workload[1] is not None and pod is not None and exporter is not None
        assert b.get_workload("wl-t")["points"] == 1
        assert b.delete_workload("wl-t") is not None  # and an admin can delete it again
        assert _rows(a) == (None, None, None)
    finally:
        a.close()
        b.close()


def test_a_report_after_another_process_deleted_the_workload_writes_its_pod(db_url):
    """The same two processes; this time the batch after the delete is a run or detection report
    (a job's last words: its finished run), which creates no series.  Its workload row was always
    written (reports serialise on it); its pod row was left out for the 5-second window."""
    a, b = open_store(db_url), open_store(db_url)
    try:
        a.touch_every_ms = 3_600_000.0
        pod = {"pod_name": "wl-t-pod-0", "pod_uid": "pod-uid"}  # as the metrics send it (no namespace)
        metrics = SeriesBatch("wl-t", "wandb", "run", 0, "wl-t-pod-0", "pod-uid", "", {"loss": {0: (1.0, 1.7e12, 0.0)}})
        for report in (dict(runs=[validate.run({"workload_uid": "wl-t", "run_id": "run", "event": "finished", **pod})]),
                       dict(detections=[validate.detection({"workload_uid": "wl-t", **pod,
                                                            "hints": {"wrapper_frameworks": ["primus"]}})])):
            a.ingest([metrics])
            assert b.delete_workload("wl-t") is not None
            a.ingest(**report)
            assert b.get_workload("wl-t")["pods"] == ["wl-t-pod-0"], report
    finally:
        a.close()
        b.close()


def test_a_body_without_points_after_another_process_deleted_the_workload_writes_its_rows(db_url):
    """The third review: a metrics body with no points (only its exporter counters) after the
    delete wrote the workload row (its "had points" changed) but neither the pod nor the
    exporter row, which this process remembered writing.  A workload row written takes its
    pod and exporter rows with it."""
    a, b = open_store(db_url), open_store(db_url)
    try:
        a.touch_every_ms = 3_600_000.0
        a.ingest([_metrics(0, {"spooled_points": 0})])
        assert b.delete_workload("wl-t") is not None
        a.ingest([SeriesBatch("wl-t", "wandb", "run", 0, "wl-t-pod-0", "pod-uid", "ns", {},
                              exporter={"spooled_points": 0})])
        workload, pod, exporter = _rows(a)
        assert workload is not None and pod is not None and exporter is not None
    finally:
        a.close()
        b.close()
