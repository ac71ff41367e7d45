"""Loss window: how much a SIGKILL loses while Lens cannot be reached.

A real training process logs 2 metrics per ``wandb.log`` at ~1,000 calls/s and prints the
time of every 10th call; Lens is unreachable (``down``: nothing listens, ``blackhole``: a
socket that accepts and never answers).  It is killed with SIGKILL at a random time; then a
real Lens server starts and ``primus-lens replay`` uploads the spool.  Per trial it prints the
points logged before the kill, the points stored in Lens after the replay, and the window:
kill time minus the log time of the first point that was lost (0 when nothing was).

    python benchmarks/bench_loss_window.py [--trials 5] [--scenarios down,blackhole]

The default flush interval (1 s) and write-ahead delay (0.25 s) bound the window to about
1.3 s; lower ``PRIMUS_LENS_FLUSH_INTERVAL`` to narrow it (``--flush-interval``).
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from _common import Server, base_env, blackhole, median  # noqa: E402

SCRIPT = r"""
import time, wandb
wandb.init(project="window")
step = 0
while True:
    wandb.log({"a": float(step), "b": 1.0})
    step += 1
    if step % 10 == 0:
        print(step, time.time(), flush=True)  # steps < step were logged by this time
        time.sleep(0.01)
"""


def trial(scenario, flush_interval, kill_after):
    hole = blackhole() if scenario == "blackhole" else None
    port = hole.getsockname()[1] if hole else 9
    uid = f"window-{scenario}-{int(time.time() * 1000)}"
    env = base_env(WANDB_MODE="disabled", WORKLOAD_UID=uid, PRIMUS_LENS_HTTP_TIMEOUT="30",
                   PRIMUS_LENS_FLUSH_INTERVAL=str(flush_interval),
                   PRIMUS_LENS_API_BASE_URL=f"http://127.0.0.1:{port}/api/v1")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    marks = []  # (steps logged, time)
    try:
        for line in proc.stdout:
            steps, when = line.split()
            marks.append((int(steps), float(when)))
            if marks[-1][1] - marks[0][1] >= kill_after:
                break
        proc.send_signal(signal.SIGKILL)
        killed = time.time()
        proc.wait()
    finally:
        if hole is not None:
            hole.close()
    with Server() as server:
        subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.cli", "replay", env["PRIMUS_LENS_SPOOL_DIR"],
                        "--url", server.api], env=env, capture_output=True, timeout=300)
        data = requests.get(f"{server.api}/workloads/{uid}/metrics/data",
                            params={"data_source": "wandb", "metrics": "a"}, timeout=60)
        stored = sorted(p["iteration"] for p in data.json().get("data", [])) if data.ok else []
    contiguous = 0
    while contiguous < len(stored) and stored[contiguous] == contiguous:
        contiguous += 1
    logged = marks[-1][0]
    # The first lost step was logged after the last mark that it exceeds.
    lost_at = next((when for steps, when in marks if steps > contiguous), killed)
    window = max(0.0, killed - lost_at) if contiguous < logged else 0.0
    return {"logged": logged, "stored": contiguous, "lost": max(0, logged - contiguous), "window_s": window}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--scenarios", default="down,blackhole")
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    for scenario in args.scenarios.split(","):
        windows = []
        for _ in range(args.trials):
            result = trial(scenario, args.flush_interval, random.uniform(2.0, 8.0))
            windows.append(result["window_s"])
            print(f"{scenario:<9} logged {result['logged']:>6} calls, stored {result['stored']:>6}, "
                  f"lost {result['lost']:>5}, window {result['window_s']:.2f} s", flush=True)
        print(f"{scenario:<9} loss window: median {median(windows):.2f} s, max {max(windows):.2f} s "
              f"(flush interval {args.flush_interval} s)", flush=True)


if __name__ == "__main__":
    main()
