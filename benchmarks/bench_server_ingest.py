"""Ingest throughput of the Lens server over HTTP.

Starts the real server (``python -m primus_lens_wandb_exporter.server``) on a fresh
database, then 16 sender threads each POST batches of 5,000 points (10 metrics x
500 steps, one rank per sender) over keep-alive connections.  Bodies are encoded
before the clock starts so the numbers measure the server, not the client's JSON.
Prints points/s and the server's CPU time (points per server CPU-second varies
less than points/s on a shared machine), and verifies that every point is stored
exactly once.

    python benchmarks/bench_server_ingest.py                       # SQLite
    python benchmarks/bench_server_ingest.py --db postgres --pg-dsn postgresql://postgres@127.0.0.1:55432/postgres

``--repeat N`` runs N times (fresh database and server each) and prints the median:
this machine's speed can swing by half within minutes, so one run says little.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from helpers.server import LensServer, create_pg_database, drop_pg_database  # noqa: E402


def make_bodies(sender: int, batches: int, batch_points: int, metrics: int, uid: str,
                explicit_rows: bool = False):
    steps_per_batch = batch_points // metrics
    now = time.time()
    out = []
    for b in range(batches):
        pts = []
        for s in range(b * steps_per_batch, (b + 1) * steps_per_batch):
            ts = now + s * 0.01
            for m in range(metrics):
                # As the exporter sends a point charted by its W&B row: no "row" (it defaults to
                # the integer step).  --explicit-rows sends it, as for define_metric steps.
                pt = {"name": f"metric_{m}", "value": (s * 7 + m) % 1000 / 7.0, "step": s, "timestamp": ts}
                if explicit_rows:
                    pt["row"] = s
                pts.append(pt)
        out.append(orjson.dumps({"source": "wandb", "workload_uid": uid, "pod_name": f"pod-{sender}",
                                 "run_id": "bench", "rank": sender, "timestamp": now, "metrics": pts}))
    return out


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process and its children (``--workers``),
    from /proc (Linux); 0.0 where unavailable.  On a shared machine points per
    server CPU-second varies far less than points per wall-clock second."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        pids = [pid] + [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid(int(d)) == pid]
    except OSError:
        return 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_times() -> list:
    """The machine's CPU time counters (/proc/stat ``cpu`` line: user, nice, system,
    idle, iowait, irq, softirq, steal, ...); [] where unavailable."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return []


def steal_share(before: list, after: list) -> float:
    """Share of the machine's CPU time the hypervisor gave to other guests between two
    ``cpu_times()``.  One reason a run can be slower than the same run minutes before;
    on the development VM it stayed at 0 % while the machine ran at half speed, so the
    points per server CPU-second are the better gauge there."""
    if not before or not after:
        return float("nan")
    delta = [b - a for a, b in zip(before, after)]
    return delta[7] / max(1, sum(delta))


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def sender(port: int, bodies, results, idx, errors):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    n = 0
    for body in bodies:
        conn.request("POST", "/api/v1/wandb/metrics", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            errors.append((resp.status, payload[:200]))
            return
        n += orjson.loads(payload)["inserted"]
    results[idx] = n
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-dsn", default=os.environ.get("PRIMUS_LENS_TEST_POSTGRES_DSN"))
    ap.add_argument("--senders", type=int, default=16)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--batches", type=int, default=20, help="batches per sender")
    ap.add_argument("--metrics", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    ap.add_argument("--explicit-rows", action="store_true",
                    help='send "row" with every point (the exporter leaves it out when it equals the step)')
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs, each on a fresh database and server; prints every run and the median")
    args = ap.parse_args()
    if args.db == "postgres" and not args.pg_dsn:
        ap.error("--pg-dsn or PRIMUS_LENS_TEST_POSTGRES_DSN is required for postgres")
    uid = "bench-ingest"
    print(f"encoding {args.senders} x {args.batches} bodies of {args.batch} points ...", flush=True)
    bodies = [make_bodies(i, args.batches, args.batch, args.metrics, uid, args.explicit_rows) for i in range(args.senders)]
    rates = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"-- run {i + 1} of {args.repeat}", flush=True)
        rate = run_once(args, bodies, uid)
        if rate is None:
            return 1
        rates.append(rate)
    if args.repeat > 1:
        print(f"runs: {' '.join(f'{r:,.0f}' for r in rates)} points/s; median={statistics.median(rates):,.0f} "
              f"min={min(rates):,.0f} max={max(rates):,.0f}")
    return 0


def run_once(args, bodies, uid: str):
    """One run on a fresh database: points/s, or None when a point was lost or doubled."""
    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    pg_db = None
    if args.db == "postgres":
        db_url = pg_db = create_pg_database(args.pg_dsn, prefix="lens_bench_")
    else:
        db_url = f"sqlite:///{tmp}/bench.db"
    srv = LensServer(db_url, tmp / "server.log", extra_args=["--log-level", "warning", "--workers", str(args.workers)]).start()
    try:
        total = args.senders * args.batches * args.batch
        results = [0] * args.senders
        errors: list = []
        threads = [threading.Thread(target=sender, args=(srv.port, bodies[i], results, i, errors))
                   for i in range(args.senders)]
        cpu0 = server_cpu_seconds(srv.proc.pid)
        machine0 = cpu_times()
        client0 = time.process_time()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        cpu = server_cpu_seconds(srv.proc.pid) - cpu0
        steal = steal_share(machine0, cpu_times())
        client_cpu = time.process_time() - client0
        if errors:
            print("errors:", errors[:3])
            return None
        import requests

        src = requests.get(f"{srv.api}/workloads/{uid}/metrics/sources", timeout=60).json()
        stored = src["data_sources"][0]["count"]
        if srv.db_kind == "sqlite":
            import sqlite3

            rows = sqlite3.connect(srv.sqlite_path).execute(
                "SELECT COUNT(*) FROM training_performance WHERE workload_uid = ?", (uid,)).fetchone()[0]
        else:
            import psycopg

            with psycopg.connect(db_url) as c:
                rows = c.execute("SELECT COUNT(*) FROM training_performance WHERE workload_uid = %s",
                                 (uid,)).fetchone()[0]
        ok = stored == rows == total == sum(results)
        print(f"database={srv.db_kind} workers={args.workers} senders={args.senders} batch={args.batch} "
              f"points={total}")
        print(f"elapsed={elapsed:.2f}s throughput={total / elapsed:,.0f} points/s")
        if cpu > 0:
            print(f"server_cpu={cpu:.2f}s ({total / cpu:,.0f} points per server CPU-second; the database "
                  f"server's own CPU not included) client_cpu={client_cpu:.2f}s "
                  f"load_average={os.getloadavg()[0]:.2f} cpu_steal={steal:.0%}")
        print(f"verify: acknowledged-new={sum(results)} summary={stored} rows={rows} -> "
              f"{'OK every point stored once' if ok else 'MISMATCH'}")
        return total / elapsed if ok else None
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_db:
            drop_pg_database(pg_db, args.pg_dsn)


if __name__ == "__main__":
    sys.exit(main())
