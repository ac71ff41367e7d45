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
    """``python -c pass``: hook on vs ``PRIMUS_LENS_WANDB_HOOK=false`` (the line then only reads
    one env var), alternating, plus ``-X importtime`` for our modules in a normal start."""
    # pip compiles bytecode when it installs a wheel; an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise recompile our modules on every start.
    import compileall

    pkg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "primus_lens_wandb_exporter")
    compileall.compile_dir(pkg, quiet=1)
    _pth_line()  # fails early when the package is not installed
    times = {"off": [], "on": []}
    for _ in range(runs):
        for name in ("off", "on"):
            env = dict(os.environ, PRIMUS_LENS_WANDB_HOOK="true" if name == "on" else "false")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"python -c pass, median of {runs}: hook off {med['off']:.2f} ms, on {med['on']:.2f} ms, "
          f"added {med['on'] - med['off']:+.2f} ms")
    ours = []
    for _ in range(30):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                             check=True).stderr
        total = 0
        for line in err.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].strip() == "primus_lens_wandb_exporter.core.autoload":
                total = int(parts[1])  # cumulative: package, core and autoload
        ours.append(total / 1000)
    print(f"our modules' import in a normal start (-X importtime, cumulative): median {statistics.median(ours):.3f} ms")


INIT = r"""
import json, statistics, sys, time
import wandb
patched = wandb.init
original = getattr(patched, "_primus_lens_original", None)
calls = {"patched": patched, "original": original}
times = {"patched": [], "original": []}
for i in range(int(sys.argv[1])):
    for name in ("original", "patched"):
        if calls[name] is None:
            continue
        t0 = time.perf_counter()
        run = calls[name](project="bench", settings=wandb.Settings(x_disable_stats=True))
        times[name].append((time.perf_counter() - t0) * 1000)
        run.finish()
print(json.dumps({k: statistics.median(v) for k, v in times.items() if v}))
"""


def bench_init(runs):
    """``wandb.init`` as patched vs the original it wraps, alternating in one process
    (the first init of the process, which also starts our worker thread, is included)."""
    for mode in ("disabled", "offline"):
        env = base_env(WANDB_MODE=mode, PRIMUS_LENS_API_BASE_URL="http://127.0.0.1:9/api/v1",
                       PRIMUS_LENS_EXIT_TIMEOUT="1")
        env["WANDB_DIR"] = env["PRIMUS_LENS_SPOOL_DIR"]
        out = subprocess.run([sys.executable, "-c", INIT, str(runs)], env=env, capture_output=True, text=True,
                             check=True, timeout=900)
        med = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"wandb.init {mode:<8} median of {runs}: original {med['original']:.1f} ms, patched "
              f"{med['patched']:.1f} ms, added {med['patched'] - med['original']:+.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--init-runs", type=int, default=7)
    args = parser.parse_args()
    bench_interpreter(args.runs)
    bench_init(args.init_runs)


if __name__ == "__main__":
    main()
