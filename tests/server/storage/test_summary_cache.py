"""SQLite: a server process answers series summaries from what it committed last, while
no other connection has written the file (``PRAGMA data_version``), and reads them
again as soon as one has: another ``--workers`` process, a second server, a shell.

The summaries decide what is new (the counts a client sees) and which rollup tail is
current, so a stale one would miscount points or corrupt rollups.
"""

from __future__ import annotations

import sqlite3
import threading

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store

UID = "wl-summaries"
T0 = 1_700_000_000_000.0


def _send(store, name, rows, uid=UID):
    pts = {r: (float(r), T0 + r, float(r)) for r in rows}
    return store.ingest([SeriesBatch(uid, "wandb", "run", 0, "", "", "", {name: pts})])


def _counting_reads(store):
    reads = []
    real = store._load_summaries

    def load(cur, keys):
        reads.append(list(keys))
        return real(cur, keys)

    store._load_summaries = load
    return reads


def _summary(path, name):
    with sqlite3.connect(path) as c:
        return c.execute("SELECT count, min_row, max_row, rev FROM series WHERE workload_uid = ? AND metric_name = ?",
                         (UID, name)).fetchone()


def test_a_sole_writer_reads_no_summary_back(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/lens.db")
    reads = _counting_reads(store)
    try:
        _send(store, "loss", range(0, 10))
        reads.clear()
        for i in range(1, 6):
            assert _send(store, "loss", range(i * 10, i * 10 + 10)).inserted == 10
        assert reads == []  # fails when every transaction reads the summaries back
        assert _summary(f"{tmp_path}/lens.db", "loss") == (60, 0, 59, 5)
    finally:
        store.close()


def test_another_connections_write_is_seen(tmp_path):
    path = f"{tmp_path}/lens.db"
    a, b = open_store(f"sqlite:///{path}"), open_store(f"sqlite:///{path}")
    reads = _counting_reads(a)
    try:
        _send(a, "loss", range(0, 300))
        _send(b, "loss", range(300, 400))    # another worker appends
        reads.clear()
        res = _send(a, "loss", range(350, 450))  # overlaps what b wrote: 50 of these are not new
        assert reads, "a kept its own summary although b wrote after it"
        assert (res.count, res.inserted) == (100, 50)
        assert _summary(path, "loss") == (450, 0, 449, 2)
        # A write outside any Lens server (the sqlite3 shell, a repair script) counts too.
        with sqlite3.connect(path) as c:
            c.execute("UPDATE series SET rev = rev + 1 WHERE workload_uid = ?", (UID,))
        reads.clear()
        _send(a, "loss", range(450, 460))
        assert reads
        assert _summary(path, "loss") == (460, 0, 459, 4)
    finally:
        a.close()
        b.close()


def test_deleting_a_workload_drops_the_cached_summaries(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/lens.db")
    try:
        _send(store, "loss", range(0, 300))
        assert store.delete_workload(UID) is not None
        # Sent again after the delete: every point is new, and the series starts over.
        res = _send(store, "loss", range(0, 20))
        assert (res.count, res.inserted) == (20, 20)
        assert _summary(f"{tmp_path}/lens.db", "loss") == (20, 0, 19, 0)
    finally:
        store.close()


# The two below came from a review: each failed when the cache was filled after the
# write lock was released (the caches are now filled by write_tx's on_commit, right
# after the COMMIT and still under the lock).

def test_a_delete_right_after_a_commit_finds_the_cache_filled_already(tmp_path):
    # Two threads: an ingest commits, and a DELETE of the workload (the API or the
    # retention sweep) waits for the write lock.  Filled after the lock was released,
    # the cache got the deleted series' summaries back after the delete had cleared
    # it, and the workload's next points went to the deleted series id (lost from
    # every answer).  The delete is started while the ingest fills its caches and
    # given half a second: with the fill under the lock it waits for it instead.
    store = open_store(f"sqlite:///{tmp_path}/lens.db")
    try:
        _send(store, "loss", range(0, 10), uid="wl-other")  # so the deleted id is not the highest
        _send(store, "loss", range(0, 10))
        real_put = store._tails.put
        deleter = []

        def put_while_a_delete_runs(tails):
            if not deleter:
                t = threading.Thread(target=lambda: deleter.append(store.delete_workload(UID)))
                deleter.append(t)
                t.start()
                t.join(0.5)
            real_put(tails)

        store._tails.put = put_while_a_delete_runs
        _send(store, "loss", range(10, 20))
        deleter[0].join(10)
        assert deleter[1] is not None  # the workload was deleted
        store._tails.put = real_put
        res = _send(store, "loss", range(0, 20))  # the workload reports again after its delete
        assert (res.count, res.inserted) == (20, 20)
        assert len(store.data(UID, "wandb", ["loss"])) == 20
    finally:
        store.close()


def test_a_failed_inline_checkpoint_neither_fails_the_committed_request_nor_staleness(tmp_path):
    # The writer's inline checkpoint runs after COMMIT.  Should it fail (a full disk
    # while copying pages), the batch is committed all the same: the request succeeds,
    # the error is counted, and the cache holds the committed summary (it held the one
    # from before the batch, so the next batches were miscounted and the rollup rows
    # computed from a stale tail lost the batch's points).
    path = f"{tmp_path}/lens.db"
    store = open_store(f"sqlite:///{path}")
    try:
        _send(store, "loss", range(0, 300))
        real = store._checkpoint_if_wal_huge
        calls = []

        def failing_checkpoint(cur):
            if not calls:
                calls.append(1)
                raise sqlite3.OperationalError("database or disk is full")
            return real(cur)

        store._checkpoint_if_wal_huge = failing_checkpoint
        pts = {r: (-1000.0 if r == 350 else float(r), T0 + r, float(r)) for r in range(300, 400)}
        res = store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts})])
        assert (res.count, res.inserted) == (100, 100)
        assert calls and store.stats()["checkpoint_errors"] == 1
        for r in range(400, 700):  # an exporter's one-point appends
            _send(store, "loss", [r])
        assert _summary(path, "loss")[:3] == (700, 0, 699)
        got = store.data(UID, "wandb", ["loss"], max_points=20)
        assert min(p[4] for p in got) == -1000.0
    finally:
        store.close()


def test_summaries_follow_every_point_one_by_one_or_in_batches(tmp_path):
    # One point past the last row (an exporter's request, per metric) takes a fast
    # path in Ingest._ingest_points; its summary must be what the general path and a
    # recount of the stored points give: timestamps that go back, steps that differ
    # from rows and go back, batches of several points in between.
    import random

    rnd = random.Random(7)
    path = f"{tmp_path}/lens.db"
    store = open_store(f"sqlite:///{path}")
    try:
        row = 0
        for _ in range(400):
            n = 1 if rnd.random() < 0.8 or row < 150 else rnd.randint(2, 5)
            pts = {}
            for _ in range(n):
                # Time and step mostly move on (new maxima), now and then go below every
                # earlier one (new minima); the step equals the row for the first 100 rows
                # (sent one point a request, so the first step apart from its row is too).
                back = row >= 150 and rnd.random() < 0.05
                ts = T0 - row * 1e3 if back else T0 + row * 10.0
                step = -float(row) if back else float(row if row < 100 else 2 * row)
                pts[row] = (rnd.random(), ts, step)
                row += 1 + (rnd.random() < 0.1)
            store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts})])
            with sqlite3.connect(path) as c:  # after every batch: a later one could hide a wrong bound
                got = c.execute("SELECT count, min_row, max_row, first_ts, last_ts, min_step, max_step, step_is_row "
                                "FROM series WHERE metric_name = 'loss'").fetchone()
                want = c.execute("SELECT COUNT(*), MIN(row_index), MAX(row_index), MIN(timestamp), MAX(timestamp), "
                                 "MIN(step), MAX(step), MIN(step = row_index) FROM points").fetchone()
            assert got == want, (row, n)
    finally:
        store.close()
