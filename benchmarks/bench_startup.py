"""Start-up cost of the exporter.

1. ``python -c pass`` with our start-up line vs without it.  A fresh interpreter that
   skips site processing (``-S``) adds site-packages to ``sys.path`` either way; one
   variant then executes our ``.pth`` line exactly as ``site`` would.  Runs alternate,
   N each; medians and the difference are printed.
2. ``wandb.init`` (offline and disabled) on the training thread, hook on vs off, in
   fresh interpreters.

    python benchmarks/bench_startup.py [--runs 200] [--init-runs 7]

Targets: <= 1 ms added to every Python start; <= 5 ms added to ``wandb.init``.
"""

import argparse
import json
import os
import site
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import base_env  # noqa: E402


def _pth_line():
    for directory in site.getsitepackages():
        path = os.path.join(directory, "primus_lens_wandb_exporter.pth")
        if os.path.exists(path):
            return open(path, encoding="utf-8").read().strip()
    raise SystemExit("primus_lens_wandb_exporter.pth is not installed: pip install -e . first")


def bench_interpreter(runs):
    paths = [p for p in sys.path if p.endswith("site-packages")] + [
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")]
    setup = f"import sys; sys.path.extend({paths!r})"
    variants = {"without": setup, "with": setup + "\n" + _pth_line()}
    times = {k: [] for k in variants}
    env = dict(os.environ)
    for _ in range(runs):
        for name, code in variants.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-S", "-c", code], env=env, check=True)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"python start, median of {runs}: without {med['without']:.2f} ms, with {med['with']:.2f} ms, "
          f"added {med['with'] - med['without']:+.2f} ms")
    # The line's own cost, measured inside the interpreter (no process noise).
    code = setup + "\nimport time\nt=time.perf_counter()\n" + _pth_line() + "\nprint((time.perf_counter()-t)*1000)"
    inside = [float(subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                                   check=True).stdout) for _ in range(30)]
    print(f"start-up line executed in-process: median {statistics.median(inside):.3f} ms")


INIT = r"""
import json, time
import wandb
t0 = time.perf_counter()
run = wandb.init(project="bench", settings=wandb.Settings(x_disable_stats=True))
t1 = time.perf_counter()
print(json.dumps({"init_ms": (t1 - t0) * 1000}))
wandb.finish()
"""


def bench_init(runs):
    for mode in ("disabled", "offline"):
        results = {True: [], False: []}
        for _ in range(runs):
            for hook in (False, True):
                env = base_env(WANDB_MODE=mode, PRIMUS_LENS_WANDB_HOOK="true" if hook else "false",
                               PRIMUS_LENS_API_BASE_URL="http://127.0.0.1:9/api/v1", PRIMUS_LENS_EXIT_TIMEOUT="1")
                env["WANDB_DIR"] = env["PRIMUS_LENS_SPOOL_DIR"]
                out = subprocess.run([sys.executable, "-c", INIT], env=env, capture_output=True, text=True,
                                     check=True, timeout=300)
                results[hook].append(json.loads(out.stdout.strip().splitlines()[-1])["init_ms"])
        off, on = statistics.median(results[False]), statistics.median(results[True])
        print(f"wandb.init {mode:<8} median of {runs}: hook off {off:.1f} ms, on {on:.1f} ms, added {on - off:+.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--init-runs", type=int, default=7)
    args = parser.parse_args()
    bench_interpreter(args.runs)
    bench_init(args.init_runs)


if __name__ == "__main__":
    main()
