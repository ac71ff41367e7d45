"""Worker-thread cost of wandb's history rules (core/steps.py), per ``wandb.log`` of 10 floats.

The training thread only queues a record (``bench_log_overhead.py``); the worker turns each
into points: flattening, W&B rows and chart steps, batching. This times the worker's
handling of queued records in-process (no wandb, no sinks: points are dropped once batched),
for the call shapes the rules distinguish. To compare with another checkout, run this file
with ``PYTHONPATH=<that checkout>/src``.

    python benchmarks/bench_worker_rules.py [--calls 50000] [--repeat 5]
"""

import argparse
import os
import time

os.environ.setdefault("PRIMUS_LENS_WANDB_API_REPORTING", "false")
os.environ.setdefault("WORKLOAD_UID", "bench-worker")
os.environ.setdefault("POD_NAME", "bench-worker-0")

from primus_lens_wandb_exporter.core.recorder import Recorder  # noqa: E402

try:
    from primus_lens_wandb_exporter.core.recorder.records import _LOG, RECORD_WIDTH
except ImportError:  # a checkout from before the recorder package (issue 12): one module
    from primus_lens_wandb_exporter.core.recorder import _LOG, RECORD_WIDTH


class Run:
    id = "bench"


def _define(rec, run, name, step_metric):
    try:
        rec.define_metric(run, name, step_metric, None, False)
    except TypeError:  # an older Recorder: (run, name, step_metric, step_sync)
        rec.define_metric(run, name, step_metric, True)
    _drain(rec)


def _drain(rec):
    queue = rec._queue
    while queue:
        rec._handle(tuple(queue.popleft() for _ in range(RECORD_WIDTH)))


CASES = {
    "log(d)": (None, lambda i: ((None, None),)),
    "log(d), define_metric('*', step_metric='gs')": ("*", lambda i: ((None, None),)),
    "log(d, commit=False) + log(d) (per pair: one row)": (None, lambda i: ((None, False), (None, None))),
    "log(d, step=i) (row closed by the next step)": (None, lambda i: ((i, None),)),
}


def bench(case, calls, repeat):
    glob, calls_of = CASES[case]
    best = float("inf")
    data = {f"metric_{i}": 0.1 * i for i in range(9)}
    for _ in range(repeat):
        rec = Recorder(plugin_manager=None)
        run = Run()
        if glob:
            _define(rec, run, glob, "gs")
        handle = rec._handle
        start = time.perf_counter()
        for i in range(calls):
            for step, commit in calls_of(i):
                handle((_LOG, run, {**data, "gs": float(i)}, step, commit, 0.0))
            if rec._pending_count > 10_000:
                rec._pending, rec._pending_count = {}, 0
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import primus_lens_wandb_exporter

    print(f"worker us per wandb.log call shape (10 floats; best of {args.repeat} x {args.calls}), "
          f"{os.path.dirname(primus_lens_wandb_exporter.__file__)}")
    for case in CASES:
        print(f"  {bench(case, args.calls, args.repeat):6.2f} us  {case}")


if __name__ == "__main__":
    main()
