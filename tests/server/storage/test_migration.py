"""A newer server opens a database written by an older schema.

Migration 2 moved points from a wide ``training_performance`` table (five text key
columns per row) to ``points`` keyed by an integer series id, and made
``training_performance`` a view.  Migration 4 split a point's one integer
``iteration`` into its W&B history row (the key) and its chart step (a double).
This builds a version-1 database by hand, with a rolled-up series, a small series
with NaN and a series whose points have no summary row, optionally upgrades it with
the statements of migrations 2 and 3 (what the server of that schema wrote), then
starts the real server on it and checks every point and rollup moved.
"""

from __future__ import annotations

import math
import sqlite3
import time

import pytest

from helpers.server_data import data, metrics_body, sql_scalar

from primus_lens_wandb_exporter.server.storage import rollup, schema

T0 = 1_700_000_000_000.0
KEY_COLS = "workload_uid, data_source, metric_name, rank, run_id"


def _big_points(n):
    return [(s, (math.nan if s == 4321 else (-50.0 if s == 777 else float(s % 100))), T0 + s) for s in range(n)]


def _build_v1(url, kind, upto=1):
    """A version-1 database: wide points table, summary and rollup rows keyed by text;
    then migrated up to schema version ``upto``."""
    big = ("wl-old", "wandb", "loss", 0, "run-1")
    small = ("wl-old", "wandb", "acc", 1, "run-1")
    orphan = ("wl-old", "wandb", "lr", 0, "run-1")  # points written with plain SQL, no summary row
    big_pts = _big_points(10_000)
    small_pts = [(s, (math.nan if s == 3 else s / 10.0), T0 + s) for s in range(10)]
    orphan_pts = [(s, 0.5, T0 + s) for s in range(5)]
    points = [k + p for k, pts in ((big, big_pts), (small, small_pts), (orphan, orphan_pts)) for p in pts]
    summary = [k + (len(pts), pts[0][0], pts[-1][0], pts[0][2], pts[-1][2], has)
               for k, pts, has in ((big, big_pts, 1), (small, small_pts, 0))]
    rollups = [big + (level, block) + tuple(agg)
               for level, block, agg in rollup.full_levels(big_pts, rollup.top_level(big_pts[-1][0]))]
    types = schema.SQLITE_TYPES if kind == "sqlite" else schema.POSTGRES_TYPES
    stmts = schema.statements(1, types)
    ins_points = (f"INSERT INTO training_performance ({KEY_COLS}, iteration, value, timestamp) "
                  f"VALUES ({', '.join('?' * 8)})")
    ins_series = (f"INSERT INTO series ({KEY_COLS}, count, min_step, max_step, first_ts, last_ts, has_rollup) "
                  f"VALUES ({', '.join('?' * 11)})")
    ins_rollup = (f"INSERT INTO series_rollup ({KEY_COLS}, level, block, {V1_ROLLUP_COLS}) "
                  f"VALUES ({', '.join('?' * 23)})")
    ins_workload = "INSERT INTO workloads (workload_uid, first_seen, last_update) VALUES (?, ?, ?)"
    version = "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
    if kind == "sqlite":
        conn = sqlite3.connect(url[len("sqlite://"):])
        with conn:
            conn.execute(version)
            for s in stmts:
                conn.execute(s)
            conn.execute("INSERT INTO schema_version VALUES (1, ?)", (time.time(),))
            conn.execute(ins_workload, ("wl-old", T0, T0))
            # SQLite stores NaN as NULL (as the version-1 server did).
            conn.executemany(ins_points, [tuple(None if v != v else v for v in p) for p in points])
            conn.executemany(ins_series, summary)
            conn.executemany(ins_rollup, [tuple(None if v != v else v for v in r) for r in rollups])
            for v in range(2, upto + 1):
                for s in schema.statements(v, types):
                    conn.execute(s)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (v, time.time()))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            conn.execute(version)
            for s in stmts:
                conn.execute(s)
            conn.execute("INSERT INTO schema_version VALUES (1, %s)", (time.time(),))
            with conn.cursor() as cur:
                cur.execute(ins_workload.replace("?", "%s"), ("wl-old", T0, T0))
                cur.executemany(ins_points.replace("?", "%s"), points)
                cur.executemany(ins_series.replace("?", "%s"), summary)
                cur.executemany(ins_rollup.replace("?", "%s"), rollups)
            for v in range(2, upto + 1):
                with conn.transaction():
                    for s in schema.statements(v, types):
                        conn.execute(s)
                    conn.execute("INSERT INTO schema_version VALUES (%s, %s)", (v, time.time()))
    return len(points)


# The rollup columns as versions 1 to 3 named them (version 4 renamed *_step to *_row).
V1_ROLLUP_COLS = ("n, nf, first_step, first_value, first_ts, last_step, last_value, last_ts, "
                  "min_step, min_value, min_ts, max_step, max_value, max_ts, time_min, time_max")


@pytest.mark.parametrize("version", [1, 3])
def test_newer_server_migrates_an_older_database(lens_server_factory, lens_db_url_factory, lens_db_kind, version):
    url = lens_db_url_factory()
    total = _build_v1(url, lens_db_kind, upto=version)
    srv = lens_server_factory(db_url=url)

    assert sql_scalar(srv, "SELECT MAX(version) FROM schema_version") == schema.LATEST >= 2
    # FAQ Q9 works unchanged on the view, and every point moved.
    q9 = "SELECT COUNT(*) FROM training_performance WHERE workload_uid = 'wl-old' AND data_source = 'wandb'"
    assert sql_scalar(srv, q9) == total == 10_015
    assert sql_scalar(srv, "SELECT COUNT(*) FROM points") == total
    avail = srv.get("/workloads/wl-old/metrics/available", data_source="wandb").json()
    assert {m["name"]: m["count"] for m in avail["metrics"]} == {"loss": 10_000, "acc": 10, "lr": 5}

    acc = data(srv, "wl-old", metrics="acc")["data"]
    assert [p["iteration"] for p in acc] == list(range(10))
    assert acc[3]["value"] == "NaN" and acc[4]["value"] == 0.4

    # The migrated rollup answers max_points: first, last, min, max and the NaN are kept.
    ds = {p["iteration"]: p["value"] for p in data(srv, "wl-old", metrics="loss", max_points=200)["data"]}
    assert len(ds) <= 400
    assert ds[0] == 0.0 and ds[9999] == 99.0 and ds[777] == -50.0 and ds[4321] == "NaN"
    assert sql_scalar(srv, "SELECT COUNT(*) FROM series_rollup") > 0

    # Ingest after the migration: an update of a migrated point and an append.
    body = metrics_body("wl-old", [("loss", 10, -99.0), ("loss", 10_000, 7.0)], run_id="run-1")
    r = srv.post("/wandb/metrics", body)
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    ds = {p["iteration"]: p["value"] for p in data(srv, "wl-old", metrics="loss", max_points=200)["data"]}
    assert ds[10] == -99.0 and ds[10_000] == 7.0 and ds[0] == 0.0
    assert sql_scalar(srv, q9) == total + 1
    assert sql_scalar(srv, "SELECT SUM(count) FROM series WHERE workload_uid = 'wl-old'") == total + 1
    # The orphan series got a summary row and takes new points like any other.
    lr = data(srv, "wl-old", metrics="lr")["data"]
    assert [p["iteration"] for p in lr] == list(range(5))

    # Version 4: every old point's row is its old iteration, and so is its step;
    # the view keeps its columns and gains row_index.
    assert sql_scalar(srv, "SELECT COUNT(*) FROM training_performance WHERE row_index = iteration") == total + 1
    assert [(p["row"], p["iteration"]) for p in lr] == [(s, s) for s in range(5)]
    # A migrated series takes points whose step is not their row.
    body = {"workload_uid": "wl-old", "run_id": "run-1", "metrics": [
        {"name": "lr", "value": 0.25, "step": 3.5, "row": 5}, {"name": "lr", "value": 0.125, "step": 3, "row": 6}]}
    assert srv.post("/wandb/metrics", body).json()["inserted"] == 2
    lr = data(srv, "wl-old", metrics="lr")["data"]
    assert [(p["row"], p["iteration"], p["value"]) for p in lr] == [
        (0, 0, 0.5), (1, 1, 0.5), (2, 2, 0.5), (3, 3, 0.5), (6, 3, 0.125), (5, 3.5, 0.25), (4, 4, 0.5)]
