"""Process CPU the exporter adds per point, WANDB_MODE=disabled, N calls of ``wandb.log`` x 10 floats.

A fresh interpreter per run, hook on and off alternating (``PRIMUS_LENS_WANDB_HOOK``), per Lens
state: ``off`` (API reporting off: no sink), ``up`` (the real server, SQLite), ``down``
(connection refused: everything spooled).  Printed per point (N x 10 points):

- ``process``: process CPU (all threads) hook on minus hook off -- the issue's number;
- ``background``: CPU of our threads (``primus-lens-*``: recorder, http, spool) -- target <= 0.5 us;
- the per-thread split (psutil thread times, 10 ms ticks: about +-0.02 us/point at 500,000 points);
- ``training``: the logging thread's added CPU per *call* (the hot path; README's <= 1 us is the
  median wall time per call, ``bench_log_overhead.py``).

Then the offline-mode added median and p99 per ``wandb.log`` (``bench_log_overhead.py --modes
offline``, Lens up): the worker competes with training for the GIL.  ``--src DIR`` runs the same
on another source tree first (e.g. the code before a change: ``--src /path/to/checkout/src``),
so that before and after are measured back to back on the same (shared) machine.

    python benchmarks/bench_worker_cpu.py [--calls 50000] [--rounds 2] [--lens off,up,down] [--src DIR]
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import WANDB_WORKER_SETUP, Server, base_env, median  # noqa: E402

CHILD = WANDB_WORKER_SETUP + r"""
import psutil
from primus_lens_wandb_exporter.core.recorder import get_recorder
rec = get_recorder()
rec.flush(30)
proc = psutil.Process()
names = {}

def ours():
    import threading
    known = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for th in proc.threads():
        name = known.get(th.id, "")
        if name.startswith("primus-lens"):
            out[name] = out.get(name, 0.0) + th.user_time + th.system_time
    return out

c0 = time.process_time(); b0 = ours(); m0 = time.thread_time()
for i in range(n):
    log(data)
m1 = time.thread_time()
rec.flush(120)
c1 = time.process_time(); b1 = ours()
threads = {k: v - b0.get(k, 0.0) for k, v in b1.items()}
http = (rec.stats().get("http") or {}) if rec.enabled else {}
print(json.dumps({"process": c1 - c0, "training": m1 - m0, "threads": threads,
                  "points": rec.counters.points if rec.enabled else 0,
                  "requests": {k: http.get(k, 0) for k in ("sent_batches", "retries", "failed_attempts",
                                                           "written_ahead_batches", "spooled_batches")}}))
"""


def run_once(hook, api, reporting, calls, src):
    env = base_env(WANDB_MODE="disabled", PRIMUS_LENS_WANDB_HOOK="true" if hook else "false",
                   PRIMUS_LENS_API_BASE_URL=api, PRIMUS_LENS_EXIT_TIMEOUT="10",
                   PRIMUS_LENS_WANDB_API_REPORTING="true" if reporting else "false")
    env["WANDB_DIR"] = env["PRIMUS_LENS_SPOOL_DIR"]
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run([sys.executable, "-c", CHILD, str(calls)], env=env, capture_output=True, text=True,
                         timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def measure(label, apis, args, src):
    points = args.calls * 10
    for state in args.lens.split(","):
        api, reporting = apis[state]
        rows = []
        for _ in range(args.rounds):
            off = run_once(False, api, reporting, args.calls, src)
            on = run_once(True, api, reporting, args.calls, src)
            background = sum(on["threads"].values())
            rows.append({"process": (on["process"] - off["process"]) / points * 1e6,
                         "background": background / points * 1e6,
                         "training": (on["training"] - off["training"]) / args.calls * 1e6,
                         "threads": {k: v / points * 1e6 for k, v in sorted(on["threads"].items())},
                         "stored": on["points"], "requests": on["requests"]})
        for row in rows:
            split = ", ".join(f"{k.replace('primus-lens-', '')} {v:.3f}" for k, v in row["threads"].items())
            print(f"{label:<7} lens {state:<5} process {row['process']:.3f} us/point  background {row['background']:.3f} "
                  f"us/point ({split})  training +{row['training']:.3f} us/call  ({row['stored']} points; http "
                  f"{' '.join(f'{k}={v}' for k, v in row['requests'].items() if v)})")
        print(f"{label:<7} lens {state:<5} median of {len(rows)}: process {median([r['process'] for r in rows]):.3f}, "
              f"background {median([r['background'] for r in rows]):.3f} us/point")


def offline(label, args, src):
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "bench_log_overhead.py"), "--modes", "offline",
           "--states", "up", "--calls", str(args.offline_calls), "--rounds", str(args.rounds)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        print(f"{label:<7} offline {line}")
    if out.returncode:
        print(out.stderr[-2000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lens", default="off,up,down")
    parser.add_argument("--src", help="another source tree, measured first (the code before a change)")
    parser.add_argument("--offline-calls", type=int, default=10000)
    parser.add_argument("--no-offline", action="store_true")
    args = parser.parse_args()
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    trees = ([("before", args.src)] if args.src else []) + [("this", os.environ.get("PYTHONPATH"))]
    with Server() as server:
        apis = {"off": ("http://127.0.0.1:9/api/v1", False), "up": (server.api, True),
                "down": ("http://127.0.0.1:9/api/v1", True)}
        for label, src in trees:
            measure(label, apis, args, src)
    if not args.no_offline:
        for label, src in trees:
            offline(label, args, src)
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
