"""``primus-lens import-wandb``: read and import one large offline W&B run.

Writes an offline run of ``--rows`` rows x 10 keys (plus a define_metric step metric every
100 rows) with the exporter off, then times ``import-wandb --dry-run`` (reading only),
an import into the real Lens server (SQLite) and a second import of the same run (points
upserted: the count must not change). Prints the numbers as JSON.

    python benchmarks/bench_import_wandb.py [--rows 20000]
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from _common import Server, base_env  # noqa: E402

SCRIPT = r"""
import sys, wandb
run = wandb.init(project="bench-import", name="big", settings=wandb.Settings(x_disable_stats=True))
run.define_metric("epoch")
run.define_metric("val/*", step_metric="epoch")
for i in range(int(sys.argv[1])):
    row = {f"k{j}": i * 0.001 + j for j in range(10)}
    if i % 100 == 0:
        row.update({"epoch": i / 1000, "val/loss": 1.0 / (i + 1)})
    run.log(row)
run.finish()
"""


def timed(cmd, env):
    """(wall seconds, CPU seconds of the command, the process); CPU is the steadier number on a
    shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} exit {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, cpu, proc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-import-")
    env = base_env(WANDB_MODE="offline", WANDB_DIR=work, PRIMUS_LENS_WANDB_HOOK="false")
    subprocess.run([sys.executable, "-c", SCRIPT, str(args.rows)], env=env, check=True)
    (run_file,) = glob.glob(os.path.join(work, "wandb", "offline-run-*", "run-*.wandb"))
    cli = [sys.executable, "-m", "primus_lens_wandb_exporter.cli", "import-wandb", run_file]
    out = {"rows": args.rows, "file_mb": round(os.path.getsize(run_file) / 1e6, 1)}
    out["dry_run_s"], out["dry_run_cpu_s"], _ = timed(cli + ["--dry-run"], env)
    with Server() as server:
        env = dict(env, PRIMUS_LENS_API_BASE_URL=server.api)
        env.pop("WORKLOAD_UID")
        for label in ("import", "reimport"):
            wall, cpu, proc = timed(cli + ["--workload-uid", "bench-import", "--json"], env)
            totals = json.loads(proc.stdout)["totals"]
            stored = requests.get(f"{server.api}/workloads/bench-import/metrics/sources", timeout=30).json()
            out[f"{label}_s"], out[f"{label}_cpu_s"] = wall, cpu
            out[f"{label}_points"] = totals["accepted"]
            out[f"{label}_stored"] = stored["data_sources"][0]["count"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
