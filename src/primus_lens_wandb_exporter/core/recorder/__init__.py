"""THE shared reporter: every integration feeds this one Recorder.

The training thread only appends a tuple to a deque (no I/O, no JSON, no locks,
no device sync).  A daemon worker thread drains it in order, mirrors wandb's own
step rules, normalises values, batches points by size and time and hands each
batch to the sinks (HTTP, JSONL, third-party) and then the reporter hooks.

One job per module: ``records`` (the record layout and THE appender, the hot path),
``worker`` (thread, exit, fork reset, drain loop, dispatch), ``runs`` (wandb runs, their
history rows, run and detection reports), ``batcher`` (points waiting for their batch),
``batch`` (MetricBatch), ``stats`` (counters, stats file).  ``Recorder`` composes them
(mixins: one object, because the wandb patches capture its queue and counters).
"""

import collections
import os
import threading
import time
from typing import Dict, Optional

from .. import normalize
from ..config import Config, load_config
from ..identity import Identity, Ranks, load_identity
from .batch import MetricBatch
from .batcher import Batcher
from .records import (_CLAIM, _CONFIG, _DEFINE, _FINISH, _RECORD, _START, _SUMMARY, RECORD_WIDTH, _no_original,
                      _time, make_log_hook)
from .runs import RunState, RunTracker
from .stats import Counters, Stats
from .worker import Worker

__all__ = ["Recorder", "MetricBatch", "Counters", "RECORD_WIDTH", "get_recorder", "reset_recorder"]


class Recorder(Worker, RunTracker, Batcher, Stats):
    """The one reporter. Get it with :func:`get_recorder`."""

    def __init__(self, config: Optional[Config] = None, identity: Optional[Identity] = None, plugin_manager=None):
        self.config = config or load_config()
        self.identity = identity or load_identity()
        self.counters = Counters()
        self._queue = collections.deque()
        self._cap = self.config.queue_size * RECORD_WIDTH  # in fields
        self._pm = plugin_manager
        self._sinks = None  # this process's sink objects (built by the worker; a forked child builds its own)
        self._runs: Dict[int, RunState] = {}
        self._record_rows: Dict[tuple, int] = {}  # (source, run id, rank) -> last row of Recorder.record
        self._pending: Dict[tuple, list] = {}  # key -> [point count, entries: Point lists and Rows] (batcher.py)
        self._pending_count = 0
        self._pending_since = None  # monotonic time of the first pending point
        self._send_at = 0.0  # wall-clock time the pending points leave (batcher.py)
        self._ranks = Ranks()
        self._ranks_checked = 0.0
        self._claims = []
        self._detection_sent = None
        self._detector = None
        self._sysmetrics = None
        self._filtered_names = set()
        self._thread = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._flushed = []  # flush requests answered, released once the chunk that held them is dropped
        self._pid = os.getpid()
        self._exit_registered = False
        self._stats_written = time.monotonic()
        self._summary_reported = time.monotonic()
        self.enabled = self.config.hook
        # The same wrapper the wandb patch installs, around wandb's part (none here).
        self._log_wrapper = self.log_hook()(_no_original)

    # ------------------------------------------------------------------ hot path
    def log(self, run, data, step=None, commit=None):
        """A ``Run.log`` call (training thread): the production appender, as the wandb patch runs it."""
        self._log_wrapper(run, data, step, commit)

    def log_hook(self):
        """THE appender: ``make(original)`` wrapping ``Run._log`` (``patching.patch``); ``log`` uses it too."""
        return make_log_hook(self)

    def record(self, metrics, step=None, *, source="wandb", run=None, rank=None, framework=None):
        """Metrics an adapter reports itself (no W&B run received them)."""
        try:
            queue = self._queue
            if len(queue) >= self._cap:
                self.counters.dropped_queue_full += 1
                return
            data = normalize.freeze(metrics if type(metrics) is dict else dict(metrics))
            queue.extend((_RECORD, run, data, step, (source, rank, framework), _time()))
            if self._thread is None:
                self._start()
        except Exception as exc:
            self._error("record", exc)

    # ------------------------------------------------------------ run lifecycle
    def run_started(self, run):
        self._put(_START, run)

    def run_finished(self, run, exit_code=0):
        self._put(_FINISH, run, exit_code)

    def summary_update(self, run, items, removed=()):
        """``run.summary`` writes ``{dotted name: value}`` and deletions (dotted names); HF
        writes its final metrics only there."""
        self._put(_SUMMARY, run, dict(items), tuple(removed))

    def config_update(self, run, data):
        self._put(_CONFIG, run, data)

    def define_metric(self, run, name, step_metric=None, step_sync=None, overwrite=False, summary=None):
        """A ``define_metric`` call, arguments as the user gave them (``core/steps.py``;
        ``summary``: its summary options, ``summary.py``)."""
        self._put(_DEFINE, run, (name, step_metric, step_sync, overwrite), summary)

    def claim(self, name, layer, version=None, confidence=1.0, indicators=(), method="exact", **extra):
        """An adapter the framework itself called: the framework is known exactly."""
        from ..detection import Evidence

        self._put(_CLAIM, None, Evidence(name=name, layer=layer, version=version, method=method,
                                         confidence=confidence, indicators=tuple(indicators), extra=extra))

    def _put(self, kind, run, payload=None, extra=None):
        try:
            self._queue.extend((kind, run, payload, extra, None, _time()))
            if self._thread is None:
                self._start()
        except Exception as exc:
            self._error("queue", exc)


# The process-wide Recorder (documented process-wide state): the wandb patches and every
# integration hold it; a forked child resets it in place (``Worker._forked``).
_recorder: Optional[Recorder] = None
_recorder_lock = threading.Lock()


def get_recorder() -> Recorder:
    """The process-wide Recorder (created on first use; recreated in a forked child)."""
    global _recorder
    rec = _recorder
    if rec is not None and rec._pid == os.getpid():
        return rec
    with _recorder_lock:
        if _recorder is None or _recorder._pid != os.getpid():
            _recorder = Recorder()
        return _recorder


def reset_recorder(recorder: Optional[Recorder] = None):
    """Replace the process-wide Recorder (tests)."""
    global _recorder
    _recorder = recorder


def _after_fork_in_child():
    rec = _recorder
    if rec is not None:
        rec._forked()


if hasattr(os, "register_at_fork"):
    # A forked child (a DataLoader worker, a multiprocessing worker with its own wandb.init)
    # keeps the same Recorder object -- the wandb patches hold it -- with its own worker.
    os.register_at_fork(after_in_child=_after_fork_in_child)
