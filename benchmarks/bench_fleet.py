"""A fleet of training ranks against one Lens server: request rate, latency, server CPU.

Starts the real server (``python -m primus_lens_wandb_exporter.server``, one worker
unless ``--workers``) on a fresh SQLite file or PostgreSQL database.  Each simulated
rank is an asyncio client on its own keep-alive connection speaking HTTP/1.1 (raw
streams: the client must cost far less than the server it measures, on the same
cores).  A rank does what an exporter does: one detection report, one run
``started``, then every ``1/--rate`` seconds (start phase random, each interval
jittered by +-10 %) a ``/wandb/metrics`` body of ``--points`` points (10 metrics of
one step, the exporter's body shape with its ``exporter`` counters), sequentially
on its connection.  ``--endpoint batch`` sends the points as ``/wandb/batch``.

Prints requests/s, latency p50/p95/p99/max (send to last byte of the answer), the
server process's CPU seconds per request (psutil/proc; PostgreSQL's own CPU is not
included), the machine's load, and verifies nothing was lost: the points counted
back through the query API (``metrics/sources``) equal the points sent and the
answers' ``inserted`` sum.

``--storage``: no server and no HTTP: the storage path alone, in this process.  Each
rank's 10-point bodies go through the server's validation (untimed) and then, in
groups of ``--group`` requests (one group commit), through ``Store.ingest_many``,
whose CPU (``time.process_time``) is what it prints per request, with PostgreSQL's
backend CPU per request (``/proc`` of the store's connections), or SQLite's pages
logged per commit by table (read from the WAL file).  ``--prefill N``
stores N points per series first, so every series has a rollup (past 256 points),
as in a fleet that has run for more than a few minutes.

``--lockstep phases|same``: the ranks log together, as a synchronous job's do, and each
sends on the exporter's schedule (``core/recorder/schedule.py``): ``phases``, every rank on
its own phase of the interval (what the exporter does); ``same``, every rank on one phase
(what it did before: each sent one interval after its first pending point).  Each send is
up to 50 ms late, as the exporter's worker polls every 50 ms.

``--timeline``: latency by the second, with the longest time the server itself took for a
request in that second (its access lines), so a stall of the load generator (clients wait,
the server does not) tells itself apart; with ``--storage``, the storage time of each round
(every rank's next row).  ``--fsync-probe DIR``: during the run, 8 KiB written and flushed
in DIR every 20 ms, and the seconds with a flush over 50 ms marked: on PostgreSQL every
commit waits for its WAL flush, so a slow disk shows up as a server stall.

``--capacity``: closed loop instead.  ``--connections`` clients send back to back
(no pause), so the server is saturated; requests per server CPU-second is then the
capacity of one server core for this request shape.

    python benchmarks/bench_fleet.py                           # 1,000 ranks x 1 req/s x 30 s, SQLite
    python benchmarks/bench_fleet.py --db postgres --pg-dsn postgresql://postgres@127.0.0.1:55432/postgres
    python benchmarks/bench_fleet.py --capacity --duration 10  # max req/s and req per server CPU-s
    python benchmarks/bench_fleet.py --prefill 300             # the same fleet once every series is rolled up
    python benchmarks/bench_fleet.py --lockstep phases         # a synchronous job's ranks, on their send phases
    python benchmarks/bench_fleet.py --quick                   # 50 ranks, 3 s (a smoke run)
    python benchmarks/bench_fleet.py --storage --prefill 300   # storage CPU per request, series with rollups
    python benchmarks/bench_fleet.py --rollup-write --db postgres --pg-dsn DSN  # the block-closing write, both ways

``--rollup-write`` (PostgreSQL): what one transaction of a lockstep fleet's block-closing
second costs to write its ~30 rollup rows, by the COPY staging path and by one statement
from arrays (``PostgresStore._write_rollup``, which picks by row count), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _common import pct  # noqa: E402
from bench_server_ingest import cpu_times, server_cpu_seconds, steal_share  # noqa: E402
from helpers.server import LensServer, create_pg_database, drop_pg_database  # noqa: E402
from helpers.sqlite_wal import frames_by_table  # noqa: E402
from primus_lens_wandb_exporter.core.recorder.schedule import next_send, send_phase  # noqa: E402

METRICS = 10
#: seconds of start-up (every rank's detection and run reports) left out of the second latency line
STEADY_AFTER = 3.0
#: the exporter's worker checks what is due every 50 ms (core/recorder/worker.py)
POLL = 0.05
#: the clock the --lockstep ranks share (their log instants and send grid)
EPOCH = time.perf_counter()
EXPORTER_COUNTERS = {"filtered_points": 0, "rejected_points": 0, "rejected_batches": 0, "auth_rejected_batches": 0,
                     "spooled_points": 0, "spool_write_errors": 0, "spool_dropped_points": 0,
                     "failed_attempts": 0, "replayed_points": 0}


class Conn:
    """One keep-alive HTTP/1.1 connection: ``request(path, body) -> (status, json)``."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None
        self.head = (f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     "User-Agent: primus-lens-wandb-exporter\r\n").encode()

    async def request(self, path: str, body: bytes):
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
            try:
                self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head
                                  + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closed the kept-alive connection (serve --workers rebalancing): reconnect.
                self.close()
                if attempt:
                    raise

    async def _response(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def identity(rank: int, job_of: int, ranks_per_job: int) -> dict:
    local = rank % ranks_per_job
    return {"workload_uid": f"fleet-job-{job_of}", "pod_name": f"fleet-job-{job_of}-pod-{local // 8}",
            "pod_uid": f"uid-{job_of}-{local // 8}", "namespace": "bench", "run_id": f"run-{job_of}",
            "rank": local, "local_rank": local % 8, "node_rank": local // 8, "world_size": ranks_per_job}


def metrics_body(ident: dict, step: int, points: int) -> dict:
    now = time.time()
    pts = [{"name": f"train/metric_{i % METRICS}", "value": (step * 7 + i) % 1000 / 7.0,
            "step": step * (points // METRICS or 1) + i // METRICS, "timestamp": now} for i in range(points)]
    return {"source": "wandb", **ident, "timestamp": now, "batch_id": os.urandom(8).hex(), "metrics": pts,
            "exporter": EXPORTER_COUNTERS}


def detection_body(ident: dict) -> dict:
    return {"source": "wandb", "type": "framework_detection_raw", "version": "1.0", **ident,
            "timestamp": time.time(), "evidence": {"wandb_config": {"framework": "megatron"}},
            "hints": {"wrapper_frameworks": ["primus"], "base_frameworks": ["megatron"], "confidence": 0.9},
            "detection": {"wrapper": "primus", "base": "megatron", "method": "exact", "confidence": 1.0}}


def run_body(ident: dict) -> dict:
    return {"source": "wandb", **ident, "event": "started", "project": "fleet", "name": ident["run_id"],
            "mode": "online", "config": {"lr": 3e-4, "batch_size": 8}, "status": "running",
            "timestamp": time.time()}


class Stats:
    def __init__(self):
        self.latencies: list = []
        self.sent_at: list = []  # perf_counter of each request's send, beside its latency
        self.errors: list = []
        self.sent_points = 0
        self.inserted = 0
        self.requests = 0

    def answer(self, status, payload, t0, n_points, endpoint):
        self.latencies.append(time.perf_counter() - t0)
        self.sent_at.append(t0)
        self.requests += 1
        if status != 200:
            self.errors.append((status, payload[:200]))
            return
        self.sent_points += n_points
        a = orjson.loads(payload)
        if endpoint == "batch":
            a = a["results"]["metrics"]
        self.inserted += a["inserted"]


def print_timeline(lat, sent_at, t0, server_ms=None, fsyncs=None) -> None:
    """``--timeline``: requests and latency by the second they were sent in; with
    ``server_ms`` (``{second: [ms]}`` from the server's access lines) the slowest time the
    server itself took in that second, and with ``fsyncs`` the probe's slow flushes there.
    A second whose clients waited long while the server answered quickly is the load
    generator's own stall."""
    by_second: dict = {}
    for x, t in zip(lat, sent_at):
        by_second.setdefault(int(t - t0), []).append(x * 1000)
    for sec in sorted(by_second):
        ms = by_second[sec]
        line = (f"  t={sec:3d}s requests={len(ms):5d} latency ms p50={pct(ms, 0.5):7.1f} "
                f"p99={pct(ms, 0.99):7.1f} max={max(ms):7.1f}")
        if server_ms is not None:
            line += f" | server max={max(server_ms.get(sec, [0.0])):7.1f}"
        slow = [d for t, d in (fsyncs or []) if int(t) == sec]
        if slow:
            line += " | slow fsync " + ", ".join(f"{d:.0f}" for d in slow) + " ms"
        print(line)


def server_ms_by_second(log_path: Path, wall0: float) -> dict:
    """``{second: [ms]}`` of the server's access lines (its own time for each request,
    by the second it answered, from ``wall0``)."""
    out: dict = {}
    with open(log_path, "rb") as f:
        for line in f:
            i = line.find(b'{"ts"')
            if i < 0 or b'"event":"access"' not in line:
                continue
            try:
                d = orjson.loads(line[i:])
            except orjson.JSONDecodeError:
                continue
            out.setdefault(int(d["ts"] - wall0), []).append(d["ms"])
    return out


class FsyncProbe(threading.Thread):
    """``--fsync-probe``: every 20 ms, 8 KiB written and ``fdatasync``-ed to a file in
    ``directory``, as PostgreSQL flushes its WAL at each commit; keeps the flushes over
    ``slow_ms`` as ``(seconds since start, ms)``.  On a shared disk a slow flush holds
    every commit waiting behind it (the server's stalls that the clients' p50 does not
    show).  Point it at the filesystem of PostgreSQL's data directory."""

    def __init__(self, directory: Path, slow_ms: float = 50.0):
        super().__init__(daemon=True)
        self.path, self.slow_ms = Path(directory) / "fsync-probe.bin", slow_ms
        self.times: list = []
        self.slow: list = []
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            buf, i = b"\0" * 8192, 0
            while not self.stop.wait(0.02):
                os.pwrite(fd, buf, (i % 64) * 8192)
                i += 1
                t = time.perf_counter()
                os.fdatasync(fd)
                d = (time.perf_counter() - t) * 1000
                self.times.append(d)
                if d > self.slow_ms:
                    self.slow.append((t - self.t0, d))
        finally:
            os.close(fd)
            self.path.unlink()

    def summary(self) -> str:
        ms = sorted(self.times) or [0.0]
        return (f"fsync probe: {len(self.times)} flushes of 8 KiB, p50={pct(ms, 0.5):.2f} p99={pct(ms, 0.99):.2f} "
                f"max={ms[-1]:.1f} ms; over {self.slow_ms:.0f} ms: {len(self.slow)} "
                + " ".join(f"(t={t:.1f}s {d:.0f} ms)" for t, d in self.slow))


async def rank_loop(args, port, rank, stop_at, stats: Stats, ranks_per_job):
    conn = Conn(port)
    ident = identity(rank, rank // ranks_per_job, ranks_per_job)
    rng = random.Random(rank)
    try:
        # Start-up: the exporter's detection report and run start, spread over the first second.
        await asyncio.sleep(rng.random() * min(1.0, 1.0 / args.rate))
        await conn.request("/api/v1/wandb/detection", orjson.dumps(detection_body(ident)))
        await conn.request("/api/v1/wandb/run", orjson.dumps(run_body(ident)))
        period = 1.0 / args.rate
        if args.lockstep:
            phase = send_phase(ident["workload_uid"], ident["rank"]) if args.lockstep == "phases" else 0.0
            slot = EPOCH + next_send(time.perf_counter() - EPOCH, period, phase)
            nxt = slot + rng.uniform(0.0, POLL)
        else:
            nxt = time.perf_counter() + rng.random() * period
        step = args.prefill
        while True:
            delay = nxt - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() >= stop_at:
                break
            body = metrics_body(ident, step, args.points)
            step += 1
            path = "/api/v1/wandb/metrics"
            if args.endpoint == "batch":
                body, path = {"metrics": body}, "/api/v1/wandb/batch"
            raw = orjson.dumps(body)
            t0 = time.perf_counter()
            status, payload = await conn.request(path, raw)
            stats.answer(status, payload, t0, args.points, args.endpoint)
            # Open loop: the next send is due one jittered period after this one was due
            # (a late answer delays only this rank's next send, as with the exporter's one sender).
            if args.lockstep:
                slot += period
                nxt = slot + rng.uniform(0.0, POLL)
            else:
                nxt += period * rng.uniform(0.9, 1.1)
    finally:
        conn.close()


async def closed_loop(args, port, idx, stop_at, stats: Stats, ranks_per_job):
    conn = Conn(port)
    ident = identity(idx, idx // ranks_per_job, ranks_per_job)
    step = args.prefill
    try:
        while time.perf_counter() < stop_at:
            body = metrics_body(ident, step, args.points)
            step += 1
            path = "/api/v1/wandb/metrics"
            if args.endpoint == "batch":
                body, path = {"metrics": body}, "/api/v1/wandb/batch"
            t0 = time.perf_counter()
            status, payload = await conn.request(path, orjson.dumps(body))
            stats.answer(status, payload, t0, args.points, args.endpoint)
    finally:
        conn.close()


def vacuum_prefill(db_url: str) -> None:
    """VACUUM ANALYZE the prefilled PostgreSQL database before the timed part.

    The prefill stores N seconds of a fleet's rows in a few seconds; autovacuum would
    have processed them while they arrived (an insert-only table is vacuumed after
    each 20 % of new rows, analyzed after each 10 %), but here its first pass over the
    whole table lands in the timed part: ~5 s of a 30-s run.  ``--no-vacuum`` leaves it
    there (to see what that pass costs while a fleet is sending)."""
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"prefill vacuumed and analyzed in {time.perf_counter() - t:.1f} s")


async def prefill(args, port, clients, ranks_per_job) -> int:
    """``--prefill N``: every rank's series get rows 0..N-1 first (one body per rank,
    16 at a time), so the timed traffic meets the steady state: every series past
    its rollup threshold (256 points), as after ~4 minutes of a real fleet."""
    sem = asyncio.Semaphore(16)
    sent = 0

    async def one(idx):
        nonlocal sent
        ident = identity(idx, idx // ranks_per_job, ranks_per_job)
        now = time.time()
        body = {"source": "wandb", **ident, "timestamp": now, "batch_id": os.urandom(8).hex(),
                "metrics": [{"name": f"train/metric_{m}", "value": (s * 7 + m) % 1000 / 7.0, "step": s,
                             "timestamp": now} for s in range(args.prefill) for m in range(METRICS)]}
        async with sem:
            conn = Conn(port)
            try:
                status, payload = await conn.request("/api/v1/wandb/metrics", orjson.dumps(body))
            finally:
                conn.close()
        if status != 200:
            raise RuntimeError(f"prefill answered {status}: {payload[:200]!r}")
        sent += len(body["metrics"])

    await asyncio.gather(*(one(i) for i in range(clients)))
    return sent


async def drive(args, port, clients, fn, duration):
    stats = Stats()
    stop_at = time.perf_counter() + duration
    ranks_per_job = max(1, clients // args.jobs)
    await asyncio.gather(*(fn(args, port, i, stop_at, stats, ranks_per_job) for i in range(clients)))
    return stats


def count_back(srv, jobs: int) -> int:
    import requests

    total = 0
    for j in range(jobs):
        r = requests.get(f"{srv.api}/workloads/fleet-job-{j}/metrics/sources", timeout=60)
        if r.status_code == 404:
            continue
        r.raise_for_status()
        total += sum(s["count"] for s in r.json()["data_sources"])
    return total


def rollup_write_bench(args) -> int:
    """``--rollup-write``: wall and client CPU of a transaction writing 30 rollup rows."""
    import statistics

    from primus_lens_wandb_exporter.server.storage import open_store
    from primus_lens_wandb_exporter.server.storage import postgres as pg

    if args.db != "postgres":
        print("--rollup-write measures PostgreSQL's two write paths: add --db postgres --pg-dsn DSN")
        return 2
    url = create_pg_database(args.pg_dsn, prefix="lens_bench_")
    store = open_store(url)
    limit = pg._ROLLUP_UNNEST_MAX
    try:
        block = 0
        for label, bound in (("COPY", -1), ("one statement", limit)) * 2:
            pg._ROLLUP_UNNEST_MAX = bound
            walls, cpus = [], []
            for _ in range(300):
                block += 1
                b = block * 64
                rows = [(sid, 6, block, 64, 0, b, 1.0, 1e12, b + 63, 2.0, 1e12 + 63, b + 5, 0.5, 1e12 + 5, b + 9,
                         3.0, 1e12 + 9, 1e12, 1e12 + 63) for sid in range(30)]
                t, c = time.perf_counter(), time.process_time()
                with store.write_tx() as cur:
                    store._write_rollup(cur, rows)
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            print(f"{label}: 30 rollup rows a transaction (BEGIN to COMMIT): wall median "
                  f"{statistics.median(walls) * 1e3:.3f} ms, client CPU median {statistics.median(cpus) * 1e3:.3f} ms")
    finally:
        pg._ROLLUP_UNNEST_MAX = limit
        store.close()
        drop_pg_database(url, args.pg_dsn)
    return 0


def storage_bench(args) -> int:
    """``--storage``: ``Store.ingest_many`` alone, in this process (see the module doc)."""
    import statistics

    from primus_lens_wandb_exporter.server.gc_tuning import tune_gc
    from primus_lens_wandb_exporter.server.ingest import prepare_metrics
    from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store

    tune_gc()  # the collector settings of a server process

    tmp = Path(tempfile.mkdtemp(prefix="lens-fleet-"))
    pg_db = create_pg_database(args.pg_dsn, prefix="lens_bench_") if args.db == "postgres" else None
    store = open_store(pg_db or f"sqlite:///{tmp}/fleet.db")
    per_job = max(1, args.ranks // args.jobs)
    idents = [identity(r, r // per_job, per_job) for r in range(args.ranks)]
    steps = [args.prefill] * args.ranks
    order = list(range(args.ranks))
    random.Random(1).shuffle(order)  # arrival order: random phases, the same every second

    def request(rank):
        body = metrics_body(idents[rank], steps[rank], args.points)
        steps[rank] += 1
        return (prepare_metrics(orjson.dumps(body)).metrics, [], [])

    def groups(n):
        out, pos = [], 0
        for _ in range(n):
            out.append([request(order[(pos + i) % args.ranks]) for i in range(args.group)])
            pos += args.group
        return out

    def backend_cpu():
        if pg_db is None:
            return 0.0
        total = 0.0
        for conn in list(store._pool.queue):  # the store's idle connections: all of them between groups
            with open(f"/proc/{conn.info.backend_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    try:
        if args.prefill:
            # Each series' first N rows in big bodies, 50 ranks per transaction.
            for r0 in range(0, args.ranks, 50):
                parts = []
                for r in range(r0, min(args.ranks, r0 + 50)):
                    i = idents[r]
                    series = {f"train/metric_{m}": {s: (s % 97 / 7.0, time.time() * 1000, float(s))
                                                    for s in range(args.prefill)} for m in range(METRICS)}
                    parts.append(([SeriesBatch(i["workload_uid"], "wandb", i["run_id"], i["rank"], i["pod_name"],
                                               i["pod_uid"], i["namespace"], series)], [], []))
                store.ingest_many(parts)
            if pg_db is not None and not args.no_vacuum:
                vacuum_prefill(pg_db)
        for g in groups(max(1, args.ranks // args.group)):  # warm: every rank once (ids and tails cached)
            store.ingest_many(g)
        if pg_db is None:
            # The prefill's WAL copied into the database first: the timed groups measure
            # the steady state, not a one-time catch-up of the prefill's checkpoint.
            with store.write_tx() as cur:
                pass
            store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        work = groups(args.groups)
        per_group, inserted = [], 0
        load0 = os.getloadavg()[0]
        b0, c0, w0 = backend_cpu(), time.process_time(), time.perf_counter()
        walls = []
        for g in work:
            t, tw = time.process_time(), time.perf_counter()
            res = store.ingest_many(g)
            per_group.append(time.process_time() - t)
            walls.append(time.perf_counter() - tw)
            inserted += sum(r.inserted for r in res)
        c1, w1, b1 = time.process_time(), time.perf_counter(), backend_cpu()
        n = args.groups * args.group
        print(f"mode=storage database={args.db} ranks={args.ranks} group={args.group} requests={n} "
              f"points={args.points} prefill={args.prefill}")
        print(f"storage cpu per request: {(c1 - c0) / n * 1e3:.3f} ms (median group "
              f"{statistics.median(per_group) / args.group * 1e3:.3f} ms), wall {(w1 - w0) / n * 1e3:.3f} ms"
              + (f", PostgreSQL backend cpu {(b1 - b0) / n * 1e3:.3f} ms" if pg_db else "")
              + f"; load_average={load0:.2f}->{os.getloadavg()[0]:.2f}")
        if pg_db is None:
            # What SQLite logged: every page a commit changed, whole (the WAL started over
            # before the timed groups; should it have restarted since, the frames since).
            tables, commits = frames_by_table(store.path)
            if commits:
                print(f"wal: {sum(tables.values()) / commits:.1f} pages per commit ("
                      + ", ".join(f"{k} {v / commits:.1f}" for k, v in tables.most_common()) + ")")
        if args.timeline:
            # A round is every rank's next row, as a fleet sends them in one second: the
            # storage wall time of each, to find the rounds that cost more than the rest.
            per_round = max(1, args.ranks // args.group)
            rounds = [sum(walls[i:i + per_round]) * 1e3 for i in range(0, len(walls) - per_round + 1, per_round)]
            med = statistics.median(rounds)
            for i, ms in enumerate(rounds):
                print(f"  row {args.prefill + i + 1:>6}: storage wall {ms:7.1f} ms" + ("  <-" if ms > 2 * med else ""))
            worst = max(range(len(rounds)), key=rounds.__getitem__)
            print(f"rounds: median {med:.1f} ms, slowest {rounds[worst]:.1f} ms at row {args.prefill + worst + 1} "
                  f"({rounds[worst] / med:.1f}x)")
        ok = inserted == n * args.points
        print(f"verify: inserted={inserted} sent={n * args.points} -> {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    finally:
        store.close()
        _remove(tmp, pg_db, args.pg_dsn)


def _remove(tmp, pg_db, pg_dsn):
    """The run's temporary directory and, on PostgreSQL, its database."""
    shutil.rmtree(tmp, ignore_errors=True)
    if pg_db:
        drop_pg_database(pg_db, pg_dsn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-dsn", default=os.environ.get("PRIMUS_LENS_TEST_POSTGRES_DSN"))
    ap.add_argument("--ranks", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=8, help="workloads the ranks are spread over")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of metrics traffic")
    ap.add_argument("--rate", type=float, default=1.0, help="metrics requests per rank per second")
    ap.add_argument("--points", type=int, default=10, help="points per request")
    ap.add_argument("--endpoint", choices=["metrics", "batch"], default="metrics")
    ap.add_argument("--capacity", action="store_true", help="closed loop: saturate the server")
    ap.add_argument("--lockstep", choices=["phases", "same"],
                    help="ranks log together and send on the exporter's phases (or all on one)")
    ap.add_argument("--connections", type=int, default=64, help="clients of --capacity")
    ap.add_argument("--workers", type=int, default=1, help="serve --workers")
    ap.add_argument("--log-level", default="info", help="the server's --log-level (info: access lines on)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra serve argument (repeatable)")
    ap.add_argument("--quick", action="store_true", help="50 ranks, 3 s: a smoke run")
    ap.add_argument("--storage", action="store_true", help="Store.ingest_many alone, in this process")
    ap.add_argument("--rollup-write", action="store_true",
                    help="PostgreSQL: a transaction of 30 rollup rows, by COPY and by one statement")
    ap.add_argument("--group", type=int, default=50, help="requests per group commit (--storage)")
    ap.add_argument("--groups", type=int, default=100, help="group commits timed (--storage)")
    ap.add_argument("--timeline", action="store_true",
                    help="latency per second of the run (where the tail is), with the server's own slowest "
                         "request; --storage: storage time per round (every rank once)")
    ap.add_argument("--fsync-probe", metavar="DIR",
                    help="flush 8 KiB every 20 ms in DIR during the run and report the slow flushes "
                         "(DIR: on the filesystem of PostgreSQL's data directory)")
    ap.add_argument("--no-vacuum", action="store_true",
                    help="PostgreSQL: leave the prefill's rows to autovacuum (it then runs inside the timed part)")
    ap.add_argument("--prefill", type=int, default=0,
                    help="points stored per series before the timed part (300: every series rolled up)")
    args = ap.parse_args()
    if args.quick:
        args.ranks, args.duration, args.connections, args.jobs = 50, 3.0, 8, 2
    if args.db == "postgres" and not args.pg_dsn:
        ap.error("--pg-dsn or PRIMUS_LENS_TEST_POSTGRES_DSN is required for postgres")
    if args.storage:
        return storage_bench(args)
    if args.rollup_write:
        return rollup_write_bench(args)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="lens-fleet-"))
    pg_db = None
    if args.db == "postgres":
        db_url = pg_db = create_pg_database(args.pg_dsn, prefix="lens_bench_")
    else:
        db_url = f"sqlite:///{tmp}/fleet.db"
    srv = LensServer(db_url, tmp / "server.log", extra_args=["--log-level", args.log_level, "--workers",
                                                             str(args.workers), *args.server_arg]).start()
    try:
        clients = args.connections if args.capacity else args.ranks
        prefilled = 0
        if args.prefill:
            t = time.perf_counter()
            prefilled = asyncio.run(prefill(args, srv.port, clients, max(1, clients // args.jobs)))
            print(f"prefill: {prefilled:,} points ({args.prefill} per series) in {time.perf_counter() - t:.1f} s")
            if pg_db is not None and not args.no_vacuum:
                vacuum_prefill(pg_db)
        cpu0 = server_cpu_seconds(srv.proc.pid)
        machine0 = cpu_times()
        load0 = os.getloadavg()[0]
        client0 = time.process_time()
        probe = FsyncProbe(Path(args.fsync_probe)) if args.fsync_probe else None
        t0, wall0 = time.perf_counter(), time.time()
        if probe:
            probe.t0 = t0
            probe.start()
        stats = asyncio.run(drive(args, srv.port, clients, closed_loop if args.capacity else rank_loop,
                                  args.duration))
        elapsed = time.perf_counter() - t0
        if probe:
            probe.stop.set()
            probe.join()
        cpu = server_cpu_seconds(srv.proc.pid) - cpu0
        client_cpu = time.process_time() - client0
        steal = steal_share(machine0, cpu_times())
        stored = count_back(srv, clients // max(1, clients // args.jobs) + 1)
        lat = stats.latencies
        n = stats.requests
        print(f"mode={'capacity' if args.capacity else 'fleet'} database={srv.db_kind} workers={args.workers} "
              f"clients={clients} rate={args.rate if not args.capacity else 'closed-loop'}/s points={args.points} "
              f"endpoint={args.endpoint} duration={args.duration:.0f}s")
        if lat:
            ms = [x * 1000 for x in lat]
            print(f"requests={n} ({n / elapsed:,.0f}/s, metrics only; +{2 * clients if not args.capacity else 0} "
                  f"start-up reports) latency ms p50={pct(ms, 0.5):.1f} p95={pct(ms, 0.95):.1f} "
                  f"p99={pct(ms, 0.99):.1f} max={max(ms):.1f}")
            # The first seconds carry every rank's start-up reports too (a detection and a
            # run each): the steady part's tail, apart.
            late = [x * 1000 for x, t in zip(lat, stats.sent_at) if t - t0 >= STEADY_AFTER]
            if late and not args.capacity:
                print(f"after the first {STEADY_AFTER:.0f} s: requests={len(late)} latency ms p50={pct(late, 0.5):.1f} "
                      f"p95={pct(late, 0.95):.1f} p99={pct(late, 0.99):.1f} max={max(late):.1f}")
            if args.timeline:
                # (no access lines below --log-level info: no server column)
                print_timeline(lat, stats.sent_at, t0, server_ms_by_second(srv.log_path, wall0) or None,
                               probe.slow if probe else None)
        if probe:
            print(probe.summary())
        total_req = n + (0 if args.capacity else 2 * clients)
        if cpu > 0 and total_req:
            print(f"server_cpu={cpu:.2f}s = {cpu / total_req * 1e3:.3f} ms per request -> capacity "
                  f"{total_req / cpu:,.0f} requests per server CPU-second; client_cpu={client_cpu:.2f}s "
                  f"load_average={load0:.2f}->{os.getloadavg()[0]:.2f} cpu_steal={steal:.0%}")
        stored -= prefilled
        ok = not stats.errors and stored == stats.sent_points == stats.inserted
        print(f"verify: sent={stats.sent_points} acknowledged-new={stats.inserted} counted-back={stored} "
              f"errors={len(stats.errors)} -> {'OK nothing lost' if ok else 'MISMATCH'}")
        if stats.errors:
            print("first errors:", stats.errors[:3])
        # What the server retried or read again on the way (all counted, none lost).
        storage = srv.get("/health").json().get("storage", {})
        print("server storage: " + " ".join(f"{k}={storage[k]}" for k in (
            "ingest_transactions", "ingest_retries", "stale_summaries", "group_commit_fallbacks",
            "rollup_tail_reads") if k in storage))
        return 0 if ok else 1
    finally:
        srv.stop()
        _remove(tmp, pg_db, args.pg_dsn)


if __name__ == "__main__":
    sys.exit(main())
