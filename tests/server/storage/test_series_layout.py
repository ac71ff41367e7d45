"""Where a rank's series summary rows live.

Every ingest request rewrites the summary row of each series it writes (its count,
last row, time range), and a request is one rank's metrics.  So the rows of one
rank's series should share a page: then a request dirties one or two pages of the
``series`` table, not one per metric.  Series created together (a fleet's first
requests, grouped into one commit) get their ids rank by rank.

The oracle is the database's own record of the pages written: on SQLite the page
numbers in the frames of the WAL file (sqlite.org/walformat.html) mapped to their
table by the ``dbstat`` table; on PostgreSQL each row's ``ctid`` (page, item).
"""

from __future__ import annotations

from helpers.sqlite_wal import frames_by_table

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store

T0 = 1_700_000_000_000.0
RANKS = 40
METRICS = [f"train/metric_{m}" for m in range(10)]


def _request(rank, row):
    series = {m: {row: (float(row), T0 + row, float(row))} for m in METRICS}
    return ([SeriesBatch("wl-layout", "wandb", f"run-{rank}", rank, f"pod-{rank}", "", "", series)], [], [])


def _ids_by_rank(store):
    with store.read_cursor() as cur:
        store._ex(cur, "SELECT rank, id FROM series WHERE workload_uid = ?", ("wl-layout",))
        out = {}
        for rank, sid in cur.fetchall():
            out.setdefault(rank, []).append(sid)
        return {r: sorted(v) for r, v in out.items()}


def test_one_ranks_series_are_created_side_by_side(db_url):
    store = open_store(db_url)
    try:
        # The fleet's first requests, all in one group commit.
        res = store.ingest_many([_request(r, 0) for r in range(RANKS)])
        assert [r.inserted for r in res] == [len(METRICS)] * RANKS
        for rank, ids in _ids_by_rank(store).items():
            assert ids == list(range(ids[0], ids[0] + len(METRICS))), f"rank {rank}: ids {ids}"
        if store.kind == "postgresql":
            with store.read_cursor() as cur:
                cur.execute("SELECT rank, (ctid::text::point)[0] FROM series WHERE workload_uid = %s",
                            ("wl-layout",))
                pages = {}
                for rank, page in cur.fetchall():
                    pages.setdefault(rank, set()).add(page)
            assert max(len(p) for p in pages.values()) <= 2, pages
    finally:
        store.close()


def test_a_request_rewrites_one_or_two_pages_of_series_rows(tmp_path):
    path = f"{tmp_path}/lens.db"
    store = open_store(f"sqlite:///{path}")
    try:
        store.ingest_many([_request(r, 0) for r in range(RANKS)])
        assert len({p for ids in _ids_by_rank(store).values() for p in ids}) == RANKS * len(METRICS)
        # The log starts over with the next commit: the WAL then holds only its frames.
        store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for rank in (3, 17, 31):
            store.ingest_many([_request(rank, 1)])
        written, commits = frames_by_table(path)
        assert commits == 3
        assert written["series"] <= 2 * 3, written
        assert written["points"] >= 3, written  # the frames are there to be read
    finally:
        store.close()
