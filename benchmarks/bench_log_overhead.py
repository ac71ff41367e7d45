"""Time added to each ``wandb.log`` of 10 float metrics by the exporter.

For each wandb mode (disabled, offline) and each Lens state (up, down = connection
refused, blackholed = accepts and never answers), a fresh interpreter logs N times
with the hook on and with it off (``PRIMUS_LENS_WANDB_HOOK=false``), timing every
call with ``perf_counter_ns``.  Runs alternate on/off to share machine noise.

    python benchmarks/bench_log_overhead.py [--calls 20000] [--rounds 3]

Target: <= 1 us added at the median in disabled mode; p99 unchanged whether Lens is up or not.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import WANDB_WORKER_SETUP, Server, base_env, blackhole, median  # noqa: E402

WORKER = WANDB_WORKER_SETUP + r"""
clock = time.perf_counter_ns
samples = []
append = samples.append
for i in range(n):
    t0 = clock(); log(data); t1 = clock()
    append(t1 - t0)
samples.sort()
print(json.dumps({"median": samples[len(samples) // 2], "p90": samples[int(n * 0.9)], "p99": samples[int(n * 0.99)],
                  "p999": samples[int(n * 0.999)]}))
t0 = time.perf_counter(); wandb.finish(); print(json.dumps({"finish_s": time.perf_counter() - t0}))
"""


def run_once(mode, hook, api, calls):
    env = base_env(WANDB_MODE=mode, PRIMUS_LENS_WANDB_HOOK="true" if hook else "false",
                   PRIMUS_LENS_API_BASE_URL=api, PRIMUS_LENS_EXIT_TIMEOUT="5")
    env["WANDB_DIR"] = env["PRIMUS_LENS_SPOOL_DIR"]
    out = subprocess.run([sys.executable, "-c", WORKER, str(calls)], env=env, capture_output=True, text=True,
                         timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    lines = [json.loads(l) for l in out.stdout.strip().splitlines() if l.startswith("{")]
    return {**lines[0], **lines[1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="disabled,offline")
    parser.add_argument("--states", default="up,down,blackholed", help="Lens states to run (bench_worker_cpu: up)")
    args = parser.parse_args()
    hole = blackhole()
    with Server() as server:
        apis = {"up": server.api, "down": "http://127.0.0.1:9/api/v1",
                "blackholed": f"http://127.0.0.1:{hole.getsockname()[1]}/api/v1"}
        print(f"{'mode':<9} {'lens':<10} {'hook':<4} {'median ns':>10} {'p90':>8} {'p99':>8} {'p99.9':>8} {'finish s':>9}")
        summary = {}
        for mode in args.modes.split(","):
            for state, api in apis.items():
                if (mode == "offline" and state == "blackholed") or state not in args.states.split(","):
                    continue
                results = {True: [], False: []}
                for _ in range(args.rounds):
                    for hook in (False, True):
                        results[hook].append(run_once(mode, hook, api, args.calls))
                for hook in (False, True):
                    r = results[hook]
                    row = {k: median([x[k] for x in r]) for k in r[0]}
                    summary[(mode, state, hook)] = row
                    print(f"{mode:<9} {state:<10} {'on' if hook else 'off':<4} {row['median']:>10.0f} {row['p90']:>8.0f} "
                          f"{row['p99']:>8.0f} {row['p999']:>8.0f} {row['finish_s']:>9.2f}")
                added = summary[(mode, state, True)]["median"] - summary[(mode, state, False)]["median"]
                added99 = summary[(mode, state, True)]["p99"] - summary[(mode, state, False)]["p99"]
                print(f"{'':<9} {'':<10} added: median {added:+.0f} ns, p99 {added99:+.0f} ns")
    hole.close()


if __name__ == "__main__":
    main()
