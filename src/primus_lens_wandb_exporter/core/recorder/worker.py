"""The worker: its thread, exit handling (atexit, SIGTERM), fork reset, the drain loop and dispatch."""

import atexit
import logging
import os
import threading
import time
from itertools import chain, repeat, starmap
from operator import is_

from ..log import configure, get_logger, log_once, raise_if_testing
from ...sinks import build_sinks, call_sinks
from .. import normalize
from .batch import Row
from .records import RECORD_WIDTH, _CLAIM, _CONFIG, _DEFINE, _FINISH, _FLUSH, _LOG, _RECORD, _START, _SUMMARY, _time


_FLOATS = {float}
#: Records handled per drain step; the GIL is handed back between steps (~0.3 ms of work each).
CHUNK = 256


class Worker:
    """The background thread that drains the queue in order (mixin of Recorder)."""

    def flush(self, timeout=None) -> bool:
        """Process everything queued so far and ask sinks to deliver it.

        Blocks at most ``timeout`` seconds (default ``PRIMUS_LENS_EXIT_TIMEOUT``);
        what cannot be delivered in time is persisted by the sinks (spool).
        """
        if self._thread is None or not self._thread.is_alive():
            return True
        timeout = self.config.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        done = threading.Event()
        self._queue.extend((_FLUSH, None, deadline, done, None, _time()))
        self._wake.set()
        return done.wait(max(0.0, deadline - time.monotonic()) + 0.5)

    def _start(self):
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            configure(self.config.debug)
            thread = threading.Thread(target=self._run, name="primus-lens-recorder", daemon=True)
            self._thread = thread
            thread.start()
            if not self._exit_registered:
                self._exit_registered = True
                atexit.register(self._at_exit)
                self._install_sigterm()

    def _install_sigterm(self):
        """Flush (bounded) on SIGTERM, then let the previous handler decide what happens."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        try:
            previous = signal.getsignal(signal.SIGTERM)
        except (ValueError, OSError):
            return
        if previous is signal.SIG_IGN:
            return

        def on_sigterm(signum, frame):
            try:
                get_logger().debug("SIGTERM: flushing (at most %.1f s)", self.config.exit_timeout)
                self.flush(self.config.exit_timeout)
            except Exception as exc:
                self._error("sigterm", exc)
            if callable(previous):
                previous(signum, frame)
            else:  # SIG_DFL: die of the signal as if we had not been here
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except (ValueError, OSError):
            pass

    def _forked(self):
        """In a forked child: the parent's queue, batches and threads are the parent's.

        Reset in place (the wandb patches captured this object, its queue and counters);
        the child's next record starts its own worker, its own HTTP session (sinks are per
        process) and reports under the child's pid.
        """
        self._queue.clear()
        self._flushed = []
        self._pending = {}
        self._pending_count = 0
        self._pending_since = None
        for name in vars(self.counters):
            setattr(self.counters, name, 0)
        self._thread = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._sysmetrics = None
        self._sinks = None  # the parent's (its threads are not here): the child's worker builds its own
        self._pid = os.getpid()

    def _at_exit(self):
        if os.getpid() != self._pid:
            return
        self.flush(self.config.exit_timeout)
        self._stopping = True

    def _error(self, where, exc):
        self.counters.worker_errors += 1
        log_once(("recorder", where, type(exc).__name__), logging.WARNING,
                 "internal error in %s (counted, training unaffected): %r", where, exc)
        raise_if_testing(exc)

    def _run(self):
        # Plugin discovery and imports cost ~0.2 s of CPU once: let wandb.init return to the
        # training thread first (nothing is due yet). A flush request wakes us at once.
        self._wake.wait(0.25)
        self._wake.clear()
        try:
            self._setup()
        except Exception as exc:
            self._error("setup", exc)
        queue = self._queue
        interval = min(0.05, self.config.flush_interval)
        while True:
            try:
                while queue:
                    self._drain(queue)
                    self._answer_flushes()
                    # Hand the GIL back between chunks: a long drain must not stall training.
                    time.sleep(0)
                self._maybe_emit()
            except Exception as exc:
                self._error("worker", exc)
            self._answer_flushes()  # the exception (and the chunk it held) is gone here
            self._wake.wait(interval)
            self._wake.clear()

    def _drain(self, queue):
        """Handle up to ``CHUNK`` queued records, in order.

        Bulk: the fields are popped in C (``starmap``) -- complete records only, each was added
        by one atomic ``extend()``.  The common record, a plain ``wandb.log(dict of floats)``
        (no step, no commit, a run whose rows follow no ``define_metric`` and have nothing
        open, every key a name already accepted, every value a finite float), takes a fast
        path: its row is numbered and the dict itself is queued for its batch as a ``Row``.
        A chunk of nothing else (a training loop's) is checked and queued in C-level passes
        (``_drain_plain``); otherwise each record is checked alone and the rest goes through
        ``_handle``.  All give the same points (tests/core/recorder/test_appender.py).
        """
        count = min(len(queue) // RECORD_WIDTH, CHUNK)
        flat = list(starmap(queue.popleft, repeat((), RECORD_WIDTH * count)))
        if self._drain_plain(flat, count):
            return
        fields = iter(flat)
        del flat
        runs = self._runs
        good = normalize.known_names()
        is_int = int.__instancecheck__
        add_row = self._add_row
        rank = self._current_ranks().rank
        counters = self.counters
        for item in zip(fields, fields, fields, fields, fields, fields):
            try:
                kind, run, data, step, commit, ts = item
                if kind == _LOG and step is None and commit is None and data:
                    state = runs.get(id(run))
                    if state is not None and state.ref is run and not state.pending_summary \
                            and data.keys() <= good:
                        try:
                            total = sum(data.values(), 0.0)
                        except Exception:
                            total = None
                        if type(total) is float and total - total == 0.0 and not any(map(is_int, data.values())):
                            row = state.rules.next_row(data, ts)
                            if row is not None:
                                counters.log_calls += 1
                                state.latest.update(data)  # W&B's summary: each key's last value
                                add_row(("wandb", state.run_id, rank), data, row, ts)
                                continue
                self._handle(item)
            except Exception as exc:
                self._error("worker", exc)

    def _drain_plain(self, flat, count) -> bool:
        """A chunk of plain calls on one run (the fast path's conditions, each checked for all
        records at once in C-level passes): numbered and queued as Rows; False, touching
        nothing, when any record is not plain."""
        if count < 2:
            return False
        kinds, runs, datas, steps, commits, stamps = (flat[i::RECORD_WIDTH] for i in range(RECORD_WIDTH))
        run = runs[0]
        # Identity checks only: a user's step could be an object whose == raises (an array).
        if kinds.count(_LOG) != count or not all(map(is_, steps, repeat(None))) \
                or not all(map(is_, commits, repeat(None))) or not all(map(is_, runs, repeat(run))) or not all(datas):
            return False
        state = self._runs.get(id(run))
        if state is None or state.ref is not run or state.pending_summary:
            return False
        last = datas[-1]
        keys = last.keys()
        same = all(map(keys.__eq__, map(dict.keys, datas)))  # the usual loop logs the same keys each time
        if not (keys <= normalize.known_names() if same else all(map(normalize.known_names().issuperset, datas))):
            return False
        values = list(chain.from_iterable(map(dict.values, datas)))
        if set(map(type, values)) != _FLOATS:
            return False  # an int, a tensor ... (float subclasses too): checked one by one
        total = sum(values, 0.0)
        if total - total != 0.0:
            return False  # a non-finite value (or a finite sum that overflowed: checked one by one)
        first = state.rules.next_rows(count, last, stamps[-1])
        if first is None:
            return False
        self.counters.log_calls += count
        if same:  # W&B's summary: each key's last value
            state.latest.update(last)
        else:
            list(map(state.latest.update, datas))
        self._queue_rows(("wandb", state.run_id, self._current_ranks().rank),
                         list(map(Row, datas, range(first, first + count), repeat(None), stamps)), len(values))
        return True

    def _setup(self):
        cfg = self.config
        log = get_logger()
        for warning in cfg.warnings:
            log.warning("%s", warning)
        if not self.identity.pod_name_from_env:
            log_once("pod_name", logging.WARNING,
                     "POD_NAME is not set; using host name %r (workload %r)",
                     self.identity.pod_name, self.identity.workload_uid)
        else:
            from ..identity import pod_name_problem

            problem = pod_name_problem(self.identity)
            if problem:  # e.g. trial-job-0-abcde: each pod would be its own workload
                log_once("pod_name_shape", logging.WARNING, "%s", problem)
        if self._pm is None:
            from ..registry import create_plugin_manager

            self._pm = create_plugin_manager(cfg.disabled_integrations)
        if self._sinks is None:
            self._sinks = build_sinks(self._pm, cfg, self.identity, self.request_stats)
        log.debug("recorder started: workload=%s pod=%s api=%s reporting=%s local=%s",
                  self.identity.workload_uid, self.identity.pod_name, cfg.api_base_url,
                  cfg.api_reporting, cfg.output_path if cfg.local_enabled else None)
        from ..detection import Detector

        self._detector = Detector(self)
        if cfg.enhance_metrics:
            from ..sysmetrics import SystemSampler

            self._sysmetrics = SystemSampler(cfg.sysmetrics_interval)
            self._sysmetrics.start()

    # One queued item, in order.

    def _handle(self, item):
        kind, run, payload, extra, commit, ts = item
        if kind == _LOG:
            self.counters.log_calls += 1
            state = self._state(run)
            self._on_log(state, payload, extra, commit, ts)
        elif kind == _RECORD:
            source, rank, framework = commit
            state = self._state(run) if run is not None else None
            self._on_record(state, payload, extra, ts, source, rank)
        elif kind == _START:
            state = self._state(run)
            state.refresh(self)
            self._report_run(state, "started")
            self._report_detection(force=True)
        elif kind == _FINISH:
            state = self._runs.get(id(run))
            if state is not None:
                state.finished = True
                state.info["status"] = "failed" if payload else "finished"
                state.info["exit_code"] = payload
                self._close_rows(state, ts)
                self._emit_all()
                self._report_run(state, "finished")
                self._call("lens_run_finished", run=self._run_dict(state), status=state.info["status"])
        elif kind == _SUMMARY:
            self._on_summary(self._state(run), payload, extra, ts)
        elif kind == _CONFIG:
            state = self._state(run)
            if isinstance(payload, dict):
                state.config.update(payload)
            self._report_run(state, "config")
        elif kind == _DEFINE:
            state = self._state(run)
            state.rules.define(*payload)
            state.summary.define(payload[0], extra, payload[3])
        elif kind == _CLAIM:
            self._claims.append(payload)
            self._report_detection()
        elif kind == _FLUSH:
            deadline, done = payload, extra
            try:
                for state in list(self._runs.values()):
                    self._close_rows(state, ts, provisional=True)
                self._emit_all()
                self._report_summaries()
                self._report_detection()
                call_sinks(self._sinks or (), "flush", deadline)
                self._call("lens_flush", deadline=deadline)
                self._write_stats()
            finally:
                self._flushed.append(done)

    def _answer_flushes(self):
        """Wake the threads waiting on a flush, after ``_drain`` has returned.

        Not from inside ``_drain``: its chunk still holds the user's logged values, and the
        exit flush's waiter goes on to finalize the interpreter.  A value freed by this
        daemon thread during finalization is freed with the thread being torn down; JAX's
        array destructor then aborts the process ("FATAL: exception not rethrown", seen
        with MaxText).  Once ``_drain`` returns, its chunk is gone.
        """
        while self._flushed:
            self._flushed.pop().set()

    def _call(self, hook_name, **kwargs):
        if self._pm is None:
            return []
        from ..registry import call_safely

        return call_safely(getattr(self._pm.hook, hook_name), **kwargs)
