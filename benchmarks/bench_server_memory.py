"""Peak RSS of the Lens server under the memory attacks of issue 11.

Each scenario runs on a fresh server process (its peak RSS, ``VmHWM`` in
``/proc/<pid>/status``, is that scenario's alone):

1. ``batch``: 6 concurrent ``/wandb/batch`` requests of MAX_POINTS_PER_REQUEST
   points each (the largest a client may send), then one with ``--points``
   points (refused 413 by the point limit, after its body was read and parsed).
2. ``stream``: ``metrics/data`` without ``max_points`` on one series of
   ``--points`` points (the answer streams), read by a slow-ish client.
3. ``bloat``: 64 MiB ``/wandb/metrics`` bodies whose values no point count reads:
   rows under an escaped key (``"\\u0072ows"``, ~7.5M values), and an unknown
   field holding an array of ~13M numbers (accepted and ignored by the protocol).

    python benchmarks/bench_server_memory.py --points 1300000          # SQLite
    python benchmarks/bench_server_memory.py --points 200000 --db postgres --pg-dsn postgresql://...

Prints peak RSS after start-up and after each scenario, and the answer sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from helpers.server import LensServer, create_pg_database, drop_pg_database  # noqa: E402
from primus_lens_wandb_exporter.limits import MAX_POINTS_PER_REQUEST  # noqa: E402

T0 = 1_700_000_000.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch_body(uid: str, n: int, row0: int = 0, compact: bool = False) -> bytes:
    if compact:  # the smallest points (~35 bytes), so a 1.3M-point body fits under MAX_BODY_BYTES
        pts = [{"name": "l", "step": r, "value": r % 101} for r in range(row0, row0 + n)]
    else:
        pts = [{"name": "loss", "row": r, "value": float(r % 101), "timestamp": T0 + r} for r in range(row0, row0 + n)]
    return orjson.dumps({"metrics": {"workload_uid": uid, "rank": 0, "run_id": "r", "metrics": pts}})


def post(srv, path, raw: bytes):
    return requests.post(srv.api + path, data=raw, headers={"Content-Type": "application/json"}, timeout=600)


def scenario_batch(srv, points: int):
    bodies = [batch_body(f"mem-{i}", MAX_POINTS_PER_REQUEST) for i in range(6)]
    codes = []
    t = time.perf_counter()
    threads = [threading.Thread(target=lambda b=b: codes.append(post(srv, "/wandb/batch", b).status_code))
               for b in bodies]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"  6 x {MAX_POINTS_PER_REQUEST:,}-point /batch ({len(bodies[0]) / 1e6:.1f} MB each): "
          f"codes {sorted(codes)} in {time.perf_counter() - t:.1f} s, peak RSS {peak_rss_mb(srv.proc.pid):.0f} MiB")
    del bodies
    big = batch_body("mem-big", points, compact=True)
    r = post(srv, "/wandb/batch", big)
    print(f"  1 x {points:,}-point /batch ({len(big) / 1e6:.1f} MB): {r.status_code} "
          f"{r.json().get('error', '')}, peak RSS {peak_rss_mb(srv.proc.pid):.0f} MiB")


def scenario_stream(srv, points: int):
    uid = "mem-stream"
    for lo in range(0, points, MAX_POINTS_PER_REQUEST):
        r = post(srv, "/wandb/batch", batch_body(uid, min(MAX_POINTS_PER_REQUEST, points - lo), lo))
        assert r.status_code == 200, r.text
    print(f"  loaded {points:,} points, peak RSS {peak_rss_mb(srv.proc.pid):.0f} MiB")
    t = time.perf_counter()
    size = 0
    with requests.get(f"{srv.api}/workloads/{uid}/metrics/data", stream=True, timeout=600) as r:
        for chunk in r.iter_content(1 << 16):
            size += len(chunk)
    print(f"  metrics/data without max_points: {r.status_code}, {size / 1e6:.0f} MB answer in "
          f"{time.perf_counter() - t:.1f} s, peak RSS {peak_rss_mb(srv.proc.pid):.0f} MiB")


def scenario_bloat(srv, points: int):
    from primus_lens_wandb_exporter.limits import MAX_BODY_BYTES

    row = b'{"values":{' + b",".join(b'"k%d":1' % i for i in range(1000)) + b'},"step":1}'
    rows = b",".join([row] * ((MAX_BODY_BYTES - 200) // (len(row) + 1)))
    junk = b",".join([b"1.5"] * ((MAX_BODY_BYTES - 200) // 4))
    for label, raw in (("rows under an escaped key", b'{"workload_uid":"bloat","\\u0072ows":[' + rows + b"]}"),
                       ("an unknown field of numbers", b'{"workload_uid":"bloat","metrics":[],"junk":[' + junk + b"]}")):
        t = time.perf_counter()
        r = post(srv, "/wandb/metrics", raw)
        print(f"  {len(raw) / 2**20:.0f} MiB /wandb/metrics, {label}: {r.status_code} {r.json().get('error', '')} in "
              f"{time.perf_counter() - t:.1f} s, peak RSS {peak_rss_mb(srv.proc.pid):.0f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=1_300_000, help="points of the big batch and the streamed series")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-dsn", default=None)
    ap.add_argument("--only", choices=["batch", "stream", "bloat"], default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lens-mem-"))
    for name, fn in [("batch", scenario_batch), ("stream", scenario_stream), ("bloat", scenario_bloat)]:
        if args.only and args.only != name:
            continue
        url = create_pg_database(args.pg_dsn) if args.db == "postgres" else f"sqlite:///{tmp}/{name}.db"
        srv = LensServer(url, tmp / f"{name}.log").start()
        try:
            print(f"{name} ({args.db}): start-up peak RSS {peak_rss_mb(srv.proc.pid):.0f} MiB")
            fn(srv, args.points)
        finally:
            srv.stop()
            if args.db == "postgres":
                drop_pg_database(url, args.pg_dsn)


if __name__ == "__main__":
    main()
