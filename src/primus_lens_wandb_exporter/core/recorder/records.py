"""The records the training thread adds, and THE appender (the wandb patch's ``Run._log`` hot path).

The queue holds records *flat*: ``RECORD_WIDTH`` fields per record, (kind, run, payload,
extra, commit, time), added by one ``deque.extend(tuple)`` (atomic under the GIL, so
records from several threads never interleave).  Flat, because a tuple per record is a
GC-tracked object (it holds the run) that survives in the queue and is traversed and
promoted by every young-generation collection in the user's process; the fields are
the run (old) and an untracked dict copy, which the collector never visits.
"""

import gc
import time

from .. import normalize, patching, sysmetrics

RECORD_WIDTH = 6
# Record kinds (first field of each record).
_LOG, _RECORD, _START, _FINISH, _SUMMARY, _CONFIG, _DEFINE, _CLAIM, _FLUSH = range(9)

_time = time.time


def _no_original(run, data, step=None, commit=None, *args, **kwargs):
    """``Recorder.log`` has no wandb call to wrap."""


def make_log_hook(recorder):
    """THE hot path: wraps ``Run._log`` so each call adds one record to the Recorder's deque.

    Everything is bound to locals here, and the body only adds one flat record (see
    ``RECORD_WIDTH``); a call costs ~0.1 us.  ``normalize.freeze`` is the same freezing
    logic as a function: inlined here, and ``patching.our_error`` too, because a function
    call per ``wandb.log`` is measurable (benchmarks/bench_log_instructions.py).
    """
    queue = recorder._queue
    cap = recorder._cap
    counters = recorder.counters
    add = sum
    tracked = gc.is_tracked
    snapshot = normalize.snapshot
    now = time.time
    kind = _LOG
    suppressed = patching.suppressed_here
    active = patching.suppress_active
    current = sysmetrics  # module: its ``current`` dict is swapped by the sampler thread
    enhance = recorder.config.enhance_metrics

    def make(original):
        def _log(self, data, step=None, commit=None, *args, **kwargs):
            if enhance and current.current and isinstance(data, dict):
                # The one documented change to the user's W&B data: opt-in system metrics.
                data = {**data, **current.current}
            # The original runs first: what wandb rejects (non-dict, non-str keys) is not recorded.
            if step is None and commit is None and not args and not kwargs:
                result = original(self, data)  # the common call: the cheapest call form
            else:
                result = original(self, data, step, commit, *args, **kwargs)
            if type(data) is dict and not (active[0] and suppressed()):
                try:
                    if len(queue) < cap:
                        # Values that could change after log() returns must be frozen now
                        # (normalize.freeze explains both checks).  An untracked dict holds no
                        # tensor, container or object: a plain copy is exact.
                        if tracked(data):
                            try:
                                frozen = type(add(data.values(), 0.0)) is float
                            except Exception:
                                frozen = False
                        else:
                            frozen = True
                        queue.extend((kind, self, data.copy() if frozen else snapshot(data), step, commit, now()))
                        if recorder._thread is None:
                            recorder._start()
                    else:
                        counters.dropped_queue_full += 1
                except Exception as exc:
                    patching.our_error("wandb.log", exc)
            return result
        return _log
    return make
