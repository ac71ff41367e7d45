"""SQLite: a server process answers series summaries from what it committed last, while
no other connection has written the file (``PRAGMA data_version``), and reads them
again as soon as one has: another ``--workers`` process, a second server, a shell.

The summaries decide what is new (the counts a client sees) and which rollup tail is
current, so a stale one would miscount points or corrupt rollups.
"""

from __future__ import annotations

import sqlite3

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store

UID = "wl-summaries"
T0 = 1_700_000_000_000.0


def _send(store, name, rows):
    pts = {r: (float(r), T0 + r, float(r)) for r in rows}
    return store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {name: pts})])


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
