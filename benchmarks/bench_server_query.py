"""Query latency of the Lens server over HTTP.

1. ``metrics/data`` for one metric with 1,000,000 stored points and
   ``max_points=2000`` (target: median <= 100 ms).  The points go in through the
   storage layer's normal ingest (so the rollups are the ones real ingest builds),
   in batches of 50,000; a second such metric whose steps differ from its rows
   (a define_metric step) measures the step lookup of downsampled answers.
2. ``metrics/available`` and ``metrics/sources`` on a workload with 10,000,000
   points (target: <= 50 ms).  Those points are bulk-loaded with plain SQL
   (INSERT / COPY plus the per-series summary rows ingest would write) to save
   minutes; the endpoints read only the summary, never the points.

Every latency is measured end to end over HTTP (keep-alive), median of N runs.

    python benchmarks/bench_server_query.py                        # SQLite
    python benchmarks/bench_server_query.py --db postgres --pg-dsn postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from helpers.server import LensServer, create_pg_database, drop_pg_database  # noqa: E402
from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store  # noqa: E402
from primus_lens_wandb_exporter.server.storage.model import POINT_COLS, SERIES_SUMMARY_COLS  # noqa: E402

T0_MS = 1_700_000_000_000.0


def load_million(store, n: int) -> None:
    """Two metrics of ``n`` rows each through Store.ingest (points, summary and rollups): ``loss``
    charted at its rows (step = row), ``eval/loss`` at a define_metric step of its own (step =
    row / 4: its downsampled answers look up the kept points' steps)."""
    chunk = 50_000
    for lo in range(0, n, chunk):
        b = SeriesBatch("bench-1m", "wandb", "run", 0, "pod-0", "", "")
        for name, div in (("loss", 1.0), ("eval/loss", 4.0)):
            b.series[name] = {s: ((math.nan if s % 100_003 == 7 else math.sin(s / 1000.0)), T0_MS + s * 100.0,
                                  s / div) for s in range(lo, min(n, lo + chunk))}
        store.ingest(metrics=[b])


def bulk_load_10m(store, n: int, metrics: int = 100, ranks: int = 8) -> None:
    """``n`` points for workload bench-10m (metrics x ranks series), straight into the tables."""
    per_series = n // (metrics * ranks)
    key_rows = [("bench-10m", "wandb", f"metric_{m:03d}", r, "run") for m in range(metrics) for r in range(ranks)]
    summary = [k + (per_series, 0, per_series - 1, T0_MS, T0_MS + (per_series - 1) * 100.0, 0, 0.0,
                    float(per_series - 1), 1) for k in key_rows]
    cols = "workload_uid, data_source, metric_name, rank, run_id"
    ph = "?" if store.kind == "sqlite" else "%s"
    # Schema 4: the summary rows first (their ids key the points), then the points (row = step).
    with store.write_tx() as cur:
        cur.execute(f"INSERT INTO workloads (workload_uid, first_seen, last_update) VALUES ({ph}, {ph}, {ph}) "
                    "ON CONFLICT DO NOTHING", ("bench-10m", T0_MS, T0_MS))
        cur.executemany(f"INSERT INTO series ({cols}, {SERIES_SUMMARY_COLS}) "
                        f"VALUES ({', '.join([ph] * 14)})", summary)
        cur.execute(f"SELECT id FROM series WHERE workload_uid = {ph} ORDER BY metric_name, rank", ("bench-10m",))
        ids = [r[0] for r in cur.fetchall()]
    for i, sid in enumerate(ids):
        with store.write_tx() as cur:
            if store.kind == "sqlite":
                cur.executemany(f"INSERT INTO points ({POINT_COLS}) VALUES (?, ?, ?, ?, ?)",
                                ((sid, s, float(s), float(s), T0_MS + s * 100.0) for s in range(per_series)))
            else:
                payload = "".join(f"{sid}\t{s}\t{float(s)!r}\t{float(s)!r}\t{T0_MS + s * 100.0!r}\n"
                                  for s in range(per_series))
                with cur.copy(f"COPY points ({POINT_COLS}) FROM STDIN") as cp:
                    cp.write(payload.encode())
        if i % 100 == 0:
            print(f"  loaded {i * per_series:,} points", flush=True)


def median_ms(port: int, path: str, runs: int) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times = []
    size = 0
    for i in range(runs + 2):
        t = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        dt = (time.perf_counter() - t) * 1000
        assert resp.status == 200, body[:300]
        size = len(body)
        if i >= 2:  # two warm-up requests
            times.append(dt)
    conn.close()
    return statistics.median(times), min(times), size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-dsn", default=os.environ.get("PRIMUS_LENS_TEST_POSTGRES_DSN"))
    ap.add_argument("--points", type=int, default=1_000_000, help="points of the single metric")
    ap.add_argument("--points-10m", type=int, default=10_000_000, help="points of the big workload (0: skip)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--keep", help="reuse/keep this SQLite file (skips loading when it exists)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    pg_db = None
    if args.db == "postgres":
        if not args.pg_dsn:
            ap.error("--pg-dsn or PRIMUS_LENS_TEST_POSTGRES_DSN is required for postgres")
        db_url = pg_db = create_pg_database(args.pg_dsn, prefix="lens_bench_q_")
    else:
        path = args.keep or f"{tmp}/bench.db"
        db_url = f"sqlite:///{path}"
    fresh = not (args.keep and os.path.exists(args.keep))
    if fresh:
        store = open_store(db_url)
        t = time.perf_counter()
        load_million(store, args.points)
        print(f"loaded 2 x {args.points:,} points (two metrics) through Store.ingest in "
              f"{time.perf_counter() - t:.1f}s")
        if args.points_10m:
            t = time.perf_counter()
            bulk_load_10m(store, args.points_10m)
            print(f"bulk-loaded {args.points_10m:,} points in {time.perf_counter() - t:.1f}s")
        if store.kind == "postgresql":
            with store.write_tx() as cur:
                cur.execute("ANALYZE")
        store.close()
    srv = LensServer(db_url, tmp / "server.log", extra_args=["--log-level", "warning"]).start()
    try:
        print(f"database={srv.db_kind} runs={args.runs} (median / min over HTTP)")
        q = [("metrics/data 1M points, max_points=2000",
              "/api/v1/workloads/bench-1m/metrics/data?data_source=wandb&metrics=loss&max_points=2000", 100),
             ("metrics/data 1M points, max_points=2000, start/end = middle 10%",
              f"/api/v1/workloads/bench-1m/metrics/data?data_source=wandb&metrics=loss&max_points=2000"
              f"&start={T0_MS + args.points * 45:.0f}&end={T0_MS + args.points * 55:.0f}", 100),
             # A span shorter than max_points / 4 base blocks: downsampled from the raw points.
             ("metrics/data 1M points, max_points=2000, start/end = middle 2% (raw-point path)",
              f"/api/v1/workloads/bench-1m/metrics/data?data_source=wandb&metrics=loss&max_points=2000"
              f"&start={T0_MS + args.points * 49:.0f}&end={T0_MS + args.points * 51:.0f}", 100),
             ("metrics/data 1M points with steps != rows (step lookups), max_points=2000",
              "/api/v1/workloads/bench-1m/metrics/data?data_source=wandb&metrics=eval/loss&max_points=2000", 100)]
        if args.points_10m:
            q += [("metrics/available on 10M-point workload",
                   "/api/v1/workloads/bench-10m/metrics/available?data_source=wandb", 50),
                  ("metrics/sources on 10M-point workload", "/api/v1/workloads/bench-10m/metrics/sources", 50),
                  ("workloads list", "/api/v1/workloads", 50)]
        ok = True
        for label, path, target in q:
            med, best, size = median_ms(srv.port, path, args.runs)
            verdict = "OK" if med <= target else "OVER TARGET"
            ok &= med <= target
            print(f"{label}: median {med:.1f} ms, min {best:.1f} ms, {size:,} bytes "
                  f"(target <= {target} ms: {verdict})")
        return 0 if ok else 1
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # a --keep database lives elsewhere
        if pg_db:
            drop_pg_database(pg_db, args.pg_dsn)


if __name__ == "__main__":
    sys.exit(main())
