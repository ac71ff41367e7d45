"""Small helpers shared by the server tests: bodies and direct database access."""

from __future__ import annotations

import sqlite3
import time


def metrics_body(uid, points, rank=0, run_id="run-1", source="wandb", **extra):
    """A /wandb/metrics body; ``points`` are (name, step, value) or (name, step, value, ts)."""
    now = time.time()
    ms = []
    for p in points:
        d = {"name": p[0], "step": p[1], "value": p[2]}
        d["timestamp"] = p[3] if len(p) > 3 else now
        ms.append(d)
    body = {"source": source, "workload_uid": uid, "pod_name": "train-pod-0", "run_id": run_id, "rank": rank,
            "timestamp": now, "metrics": ms}
    body.update(extra)
    return body


def sql_scalar(server, sql, params=()):
    """Run SQL on the server's real database (SQLite file or PostgreSQL) and return the first value."""
    if server.db_kind == "sqlite":
        conn = sqlite3.connect(server.sqlite_path)
        try:
            return conn.execute(sql, params).fetchone()[0]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(server.db_url) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchone()[0]


def data(server, uid, **params):
    """GET metrics/data and return the response JSON (asserting 200)."""
    r = server.get(f"/workloads/{uid}/metrics/data", **params)
    assert r.status_code == 200, r.text
    return r.json()
