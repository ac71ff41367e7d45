"""Delivery: 20,000 ``wandb.log`` calls of 10 metrics as fast as possible.

Scenarios against the real Lens server (SQLite):
  up        - Lens up the whole time;
  outage    - Lens down for the first half of the run, back for the second;
Prints points stored (expected 200,000, each exactly once), the log loop's time,
and how long ``wandb.finish`` took to deliver the rest.

    python benchmarks/bench_delivery.py [--calls 20000] [--mode disabled]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from _common import Server, base_env  # noqa: E402

SCRIPT = r"""
import json, os, sys, time, wandb
n, marker = int(sys.argv[1]), sys.argv[2]
wandb.init(project="delivery", settings=wandb.Settings(x_disable_stats=True))
names = [f"m{i}" for i in range(10)]
t0 = time.perf_counter()
for step in range(n):
    wandb.log({name: step + i / 10 for i, name in enumerate(names)})
    if marker != "-" and step == n // 2 - 1:
        open(marker, "w").close()
        while not os.path.exists(marker + ".go"):
            time.sleep(0.01)
t1 = time.perf_counter()
wandb.finish()
t2 = time.perf_counter()
print(json.dumps({"loop_s": t1 - t0, "finish_s": t2 - t1}))
"""


def run(server, scenario, calls, mode, tmp):
    uid = f"delivery-{scenario}-{int(time.time())}"
    marker = os.path.join(tmp, uid) if scenario == "outage" else "-"
    env = base_env(WANDB_MODE=mode, WORKLOAD_UID=uid, PRIMUS_LENS_API_BASE_URL=server.api,
                   PRIMUS_LENS_EXIT_TIMEOUT="120", PRIMUS_LENS_MAX_RETRIES="2")
    env["WANDB_DIR"] = env["PRIMUS_LENS_SPOOL_DIR"]
    if scenario == "outage":
        # Stop the process only: Server.stop() also removes the database directory.
        server.proc.terminate()
        server.proc.wait(30)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(calls), marker], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if scenario == "outage":
        while not os.path.exists(marker):
            time.sleep(0.05)
        server.start()
        open(marker + ".go", "w").close()
    out, err = proc.communicate(timeout=900)
    if proc.returncode:
        raise RuntimeError(err[-2000:])
    timing = json.loads(out.strip().splitlines()[-1])
    body = requests.get(f"{server.api}/workloads/{uid}/metrics/available", params={"data_source": "wandb"},
                        timeout=30).json()
    stored = sum(m["count"] for m in body["metrics"])
    print(f"{scenario:<8} {mode:<9} stored {stored:>7} of {calls * 10}  log loop {timing['loop_s']:.2f} s "
          f"({calls / timing['loop_s']:.0f} calls/s)  finish {timing['finish_s']:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--mode", default="disabled")
    args = parser.parse_args()
    # The markers live outside the server's directory: Server.stop() (the outage) removes that.
    markers = tempfile.mkdtemp(prefix="lens-bench-markers-")
    with Server() as server:
        for scenario in ("up", "outage"):
            run(server, scenario, args.calls, args.mode, markers)


if __name__ == "__main__":
    main()
