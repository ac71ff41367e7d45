"""Instructions added to each ``wandb.log`` of 10 floats, counted by callgrind.

Wall-clock timings on a shared 2-core machine move with its load; instruction counts
do not.  This runs the same disabled-mode loop as ``bench_log_overhead.py`` under
``valgrind --tool=callgrind``, once with the hook off and once on, and counts only
the training (main) thread's instructions inside the timed calls (collection is
switched on inside ``itertools.starmap``, which drives the loop).  The worker thread
is counted apart and not included: what is left is the cost on the training thread,
amortised garbage collections included.

    python benchmarks/bench_log_instructions.py [--calls 20000]

Needs valgrind (Debian package ``valgrind``). Each run takes about a minute.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _common import WANDB_WORKER_SETUP, base_env  # noqa: E402

WORKER = WANDB_WORKER_SETUP + r"""
collections.deque(itertools.starmap(log, itertools.repeat((data,), n)), maxlen=0)
wandb.finish()
"""


def count(hook: bool, calls: int, workdir: str) -> int:
    env = base_env(WANDB_MODE="disabled", PRIMUS_LENS_WANDB_HOOK="true" if hook else "false",
                   PRIMUS_LENS_API_BASE_URL="http://127.0.0.1:9/api/v1", PYTHONHASHSEED="0")
    env["WANDB_DIR"] = env["PRIMUS_LENS_SPOOL_DIR"]
    out = os.path.join(workdir, f"callgrind.{'on' if hook else 'off'}")
    cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=starmap_next", "--separate-threads=yes",
           f"--callgrind-out-file={out}", sys.executable, "-c", WORKER, str(calls)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    with open(f"{out}-01") as fh:  # thread 1: the training thread
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in callgrind output")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="lens-callgrind-") as workdir:
        off = count(False, args.calls, workdir) / args.calls
        on = count(True, args.calls, workdir) / args.calls
    print(f"instructions per wandb.log (disabled mode, 10 floats, training thread, {args.calls} calls)")
    print(f"hook off {off:,.0f}   hook on {on:,.0f}   added {on - off:+,.0f}")


if __name__ == "__main__":
    main()
