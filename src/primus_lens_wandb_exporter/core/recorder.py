"""THE shared reporter: every integration feeds this one Recorder.

The training thread only appends a tuple to a deque (no I/O, no JSON, no locks,
no device sync).  A daemon worker thread drains it in order, mirrors wandb's own
step rules, normalises values, batches points by size and time and hands each
batch to the reporter hooks (HTTP sink, JSONL sink, third-party sinks).
"""

import atexit
import collections
import gc
import logging
import operator
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import normalize, patching, sysmetrics
from ..limits import MAX_VALUE_DEPTH
from .steps import StepRules, record_row
from .config import Config, load_config
from .identity import Identity, Ranks, load_identity, resolve_ranks
from .log import configure, get_logger, log_once, raise_if_testing
from ..sinks import OFF_STATS, build_sinks, call_sinks

# The queue holds records *flat*: RECORD_WIDTH fields per record, (kind, run, payload,
# extra, commit, time), added by one ``deque.extend(tuple)`` (atomic under the GIL, so
# records from several threads never interleave).  Flat, because a tuple per record is a
# GC-tracked object (it holds the run) that survives in the queue and is traversed and
# promoted by every young-generation collection in the user's process; the fields are
# the run (old) and an untracked dict copy, which the collector never visits.
RECORD_WIDTH = 6
# Record kinds (first field of each record).
_LOG, _RECORD, _START, _FINISH, _SUMMARY, _CONFIG, _DEFINE, _CLAIM, _FLUSH = range(9)

_time = time.time


@dataclass
class MetricBatch:
    """Points of one (data source, run, rank), ready for the wire (``to_payload``)."""

    source: str
    run_id: str
    rank: int
    local_rank: int
    node_rank: int
    world_size: int
    points: List[Dict[str, Any]]
    identity: Identity
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    #: The recorder's part of the SPEC's ``exporter`` counters (sinks add their own).
    exporter: Dict[str, int] = field(default_factory=dict)

    def to_payload(self) -> Dict[str, Any]:
        ident = self.identity
        return {
            "source": self.source,
            "workload_uid": ident.workload_uid,
            "pod_uid": ident.pod_uid,
            "pod_name": ident.pod_name,
            "namespace": ident.namespace,
            "run_id": self.run_id,
            "rank": self.rank,
            "local_rank": self.local_rank,
            "node_rank": self.node_rank,
            "world_size": self.world_size,
            "timestamp": self.created,
            "batch_id": self.batch_id,
            "metrics": self.points,
            "exporter": dict(self.exporter),
        }


class RunState:
    """What the worker knows of one W&B run; its history rows follow wandb's (core/steps.py)."""

    def __init__(self, run, recorder):
        self.ref = run
        self.run_id = str(_attr(run, "id", "") or "")
        starting = int(_attr(run, "starting_step", 0) or _attr(run, "_starting_step", 0) or 0)
        self.rules = StepRules(starting, emittable=_is_point_name)
        self.history_keys = set()
        self.summary = {}
        self.pending_summary = {}  # summary-only keys waiting for the row they belong to
        self.config = {}
        self.finished = False
        self.info = {}
        self.refresh(recorder)

    def refresh(self, recorder):
        run = self.ref
        self.run_id = str(_attr(run, "id", "") or self.run_id or "")
        settings = _attr(run, "settings", None)
        self.info = {
            "project": _attr(run, "project", None),
            "name": _attr(run, "name", None),
            "entity": _attr(run, "entity", None),
            "group": _attr(run, "group", None),
            "tags": list(_attr(run, "tags", ()) or ()),
            "mode": str(_attr(settings, "mode", "") or "") or None,
        }
        try:
            cfg = _attr(run, "config", None)
            if cfg is not None:
                as_dict = getattr(cfg, "as_dict", None)
                data = as_dict() if callable(as_dict) else dict(cfg)
                self.config.update({k: v for k, v in data.items() if k != "_wandb"})
        except Exception:
            pass


_first = operator.itemgetter(0)


def _is_point_name(name):
    """A step-metric value W&B fills into a row is a point unless its name is one Lens filters."""
    return not normalize.name_problem(name)


def _attr(obj, name, default):
    try:
        return getattr(obj, name, default)
    except Exception:
        return default


class Counters:
    """Every drop, filter, retry and error is counted (``primus-lens doctor``)."""

    def __init__(self):
        self.log_calls = 0
        self.points = 0
        self.batches = 0
        self.filtered = 0
        self.dropped_queue_full = 0
        self.dropped_stale_step = 0
        self.worker_errors = 0
        self.detections = 0

    def as_dict(self):
        return dict(vars(self))

    def exporter(self) -> Dict[str, int]:
        """The recorder's counters in the SPEC's ``exporter`` object (names as Lens shows them)."""
        return {"queue_dropped": self.dropped_queue_full, "filtered_points": self.filtered,
                "stale_step_dropped": self.dropped_stale_step, "worker_errors": self.worker_errors}


class Recorder:
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
        self._pending: Dict[tuple, List[dict]] = {}
        self._pending_count = 0
        self._pending_since = None
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
        self._pid = os.getpid()
        self._exit_registered = False
        self._stats_written = time.monotonic()
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

    def summary_update(self, run, items):
        """Summary values (HF writes its final metrics only there)."""
        self._put(_SUMMARY, run, dict(items))

    def config_update(self, run, data):
        self._put(_CONFIG, run, data)

    def define_metric(self, run, name, step_metric=None, step_sync=None, overwrite=False):
        """A ``define_metric`` call, arguments as the user gave them (``core/steps.py``)."""
        self._put(_DEFINE, run, (name, step_metric, step_sync, overwrite))

    def claim(self, name, layer, version=None, confidence=1.0, indicators=(), method="exact", **extra):
        """An adapter the framework itself called: the framework is known exactly."""
        from .detection import Evidence

        self._put(_CLAIM, None, Evidence(name=name, layer=layer, version=version, method=method,
                                         confidence=confidence, indicators=tuple(indicators), extra=extra))

    def _put(self, kind, run, payload=None, extra=None):
        try:
            self._queue.extend((kind, run, payload, extra, None, _time()))
            if self._thread is None:
                self._start()
        except Exception as exc:
            self._error("queue", exc)

    # ------------------------------------------------------------------ control
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

    def stats(self) -> Dict[str, Any]:
        out = {"recorder": self.counters.as_dict(), "queue_length": len(self._queue) // RECORD_WIDTH}
        out.update(OFF_STATS)
        for sink in self._sinks or ():
            try:
                out[sink.name] = sink.stats()
            except Exception as exc:
                self._error("sink stats", exc)
        if self._pm is not None:
            from .plugins import call_safely

            for result in call_safely(self._pm.hook.lens_sink_stats):
                out.update(result)
        return out

    # ----------------------------------------------------------------- internals
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
        pop = queue.popleft
        interval = min(0.05, self.config.flush_interval)
        while True:
            try:
                handled = 0
                while queue:
                    # Complete records only: each was added by one atomic extend().
                    item = (pop(), pop(), pop(), pop(), pop(), pop())
                    self._handle(item)
                    handled += 1
                    if not handled & 31:
                        # Hand the GIL back now and then: a long drain must not stall training.
                        time.sleep(0)
                self._maybe_emit()
            except Exception as exc:
                self._error("worker", exc)
            self._wake.wait(interval)
            self._wake.clear()

    def _setup(self):
        cfg = self.config
        log = get_logger()
        for warning in cfg.warnings:
            log.warning("%s", warning)
        if not self.identity.pod_name_from_env:
            log_once("pod_name", logging.WARNING,
                     "POD_NAME is not set; using host name %r (workload %r)",
                     self.identity.pod_name, self.identity.workload_uid)
        if self._pm is None:
            from .plugins import create_plugin_manager

            self._pm = create_plugin_manager(cfg.disabled_integrations)
        if self._sinks is None:
            self._sinks = build_sinks(self._pm, cfg, self.identity, self.request_stats)
        log.debug("recorder started: workload=%s pod=%s api=%s reporting=%s local=%s",
                  self.identity.workload_uid, self.identity.pod_name, cfg.api_base_url,
                  cfg.api_reporting, cfg.output_path if cfg.local_enabled else None)
        from .detection import Detector

        self._detector = Detector(self)
        if cfg.enhance_metrics:
            from .sysmetrics import SystemSampler

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
            self._on_summary(self._state(run), payload, ts)
        elif kind == _CONFIG:
            state = self._state(run)
            if isinstance(payload, dict):
                state.config.update(payload)
            self._report_run(state, "config")
        elif kind == _DEFINE:
            self._state(run).rules.define(*payload)
        elif kind == _CLAIM:
            self._claims.append(payload)
            self._report_detection()
        elif kind == _FLUSH:
            deadline, done = payload, extra
            try:
                for state in list(self._runs.values()):
                    self._close_rows(state, ts, provisional=True)
                self._emit_all()
                self._report_detection()
                call_sinks(self._sinks or (), "flush", deadline)
                self._call("lens_flush", deadline=deadline)
                self._write_stats()
            finally:
                done.set()

    def _state(self, run) -> RunState:
        key = id(run)
        state = self._runs.get(key)
        if state is None or state.ref is not run:
            state = RunState(run, self)
            self._runs[key] = state
            self._report_detection()
        return state

    def _on_log(self, state, data, step, commit, ts):
        # wandb's rows (core/steps.py): values wait in the open row until wandb closes it,
        # because a later call of the same row can still change them or their step.
        if step is not None:
            try:
                step = int(step)
            except (TypeError, ValueError):
                step = None
        points, others = self._flatten(data)
        closed = state.rules.log(points, others, step, commit, ts)
        if closed is None:
            self.counters.dropped_stale_step += 1
            log_once(("stale", state.run_id), logging.DEBUG,
                     "wandb drops data logged at step %s < current step %s; Lens does too",
                     step, state.rules.row)
            return
        state.history_keys.update(map(_first, points))
        if others:
            state.history_keys.update(others)
        for row, row_points in closed:
            self._emit_row(state, row, row_points, ts)

    def _emit_row(self, state, row, row_points, ts):
        """A closed W&B history row, and the summary-only values waiting for it."""
        if state.pending_summary:
            for name, *_ in row_points:
                # The row holds the key: W&B's history has this value, not the summary's.
                state.pending_summary.pop(name, None)
            row_points = row_points + self._summary_row_points(state, row, ts)
        self._add_points(row_points, "wandb", state.run_id)

    def _close_rows(self, state, ts, provisional=False):
        """finish (the open row is written) or flush (sent as it stands now, left open)."""
        rules = state.rules
        for row, row_points in (rules.peek() if provisional else rules.close()):
            self._add_points(row_points, "wandb", state.run_id)
        if state.pending_summary:
            row = rules.last_row if rules.last_row is not None else rules.row
            self._add_points(self._summary_row_points(state, row, ts), "wandb", state.run_id)

    def _on_record(self, state, data, step, ts, source, rank):
        """Metrics an adapter reported itself: no W&B row; row = step (core/steps.py)."""
        if step is None:
            step = state.rules.row if state is not None else 0
        elif type(step) is not int:
            number = normalize.to_float(step)
            step = 0 if number is None or number != number or abs(number) == float("inf") else number
        points, _ = self._flatten(data)
        if not points:
            return
        run_id = state.run_id if state else ""
        rank = self._current_ranks().rank if rank is None else rank
        key = (source, run_id, rank)
        row = record_row(step, self._record_rows.get(key))
        if row > self._record_rows.get(key, -1):
            self._record_rows[key] = row
        self._add_points([(name, value, step, row, ts) for name, value in points], source, run_id, rank)

    def _flatten(self, data):
        """Points of ``data``, and its other keys ({name: number or None}); filtered counted."""
        points, filtered = normalize.flatten(data)
        others = {}
        if filtered:
            self.counters.filtered += len(filtered)
            for name, reason in filtered:
                # Reserved and internal names are not points but their values still count
                # for wandb's rules (``define_metric("loss", step_metric="step")``).
                others[name] = normalize.to_float(data[name]) if name in data else None
                if (name, reason) not in self._filtered_names and len(self._filtered_names) < 10000:
                    self._filtered_names.add((name, reason))
                    get_logger().debug("filtered %r: %s", name, reason)
        return points, others

    def _add_points(self, row_points, source, run_id, rank=None):
        """Queue ``(name, value, step, row, timestamp)`` points for the sinks."""
        if not row_points:
            return
        ranks = self._current_ranks()
        rank = ranks.rank if rank is None else rank
        key = (source, run_id, rank)
        bucket = self._pending.get(key)
        if bucket is None:
            bucket = self._pending[key] = []
        wire = normalize.wire_value
        for name, value, step, row, ts in row_points:
            # value - value == 0 is False only for NaN/±Inf, which travel as strings.
            point = {"name": name, "value": value if value - value == 0 else wire(value),
                     "step": step, "timestamp": ts}
            # The wire's default for a missing row is the (integer) step: most points are
            # charted by their row, and leaving it out keeps request bodies ~15 % smaller
            # (what the server spends per point is mostly parsing; docs/protocol.md).
            if row != step or type(step) is not int:
                point["row"] = row
            bucket.append(point)
        self.counters.points += len(row_points)
        self._pending_count += len(row_points)
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self._pending_count >= self.config.batch_size:
            self._emit_all()

    def _on_summary(self, state, items, ts):
        state.summary.update(items)
        # Keys that never appeared in history (HF's train_runtime ...) become points; keys
        # that did are only summaries of history and are not re-sent.
        fresh = {k: v for k, v in items.items() if k not in state.history_keys}
        if fresh:
            # They belong to the row closed next (HF sets them right before its final
            # wandb.log) and take that row's step metric (train/global_step ...); at
            # finish or flush without such a row, the last row's. A key the next row
            # itself holds is history there: that value wins (``_emit_row``).
            state.pending_summary.update(fresh)
        self._report_run(state, "summary")

    def _summary_row_points(self, state, row, ts):
        pending, state.pending_summary = state.pending_summary, {}
        points, _ = normalize.flatten(pending)
        rules = state.rules
        values = rules.last_values if row == rules.last_row else {}
        return [(name, value, rules.chart_step(name, values, row, bind=False), row, ts) for name, value in points]

    def _current_ranks(self) -> Ranks:
        now = time.monotonic()
        if now - self._ranks_checked > 5.0:
            self._ranks_checked = now
            self._ranks = resolve_ranks()
        return self._ranks

    def request_stats(self):
        """Write the stats file soon (a sink saw a problem doctor must show, e.g. a full spool)."""
        self._stats_written = float("-inf")

    def _write_stats(self):
        """Counters where ``primus-lens doctor`` finds them.

        In ``<spool dir>/stats`` and, always, in a small directory outside the spool
        (``spool.stats_fallback_dir``, /dev/shm): a full or read-only spool is exactly when
        doctor must still read the counts of what was lost.
        """
        from ..sinks.spool import default_spool_dir, stats_fallback_dir, write_file_atomic

        self._stats_written = time.monotonic()
        try:
            import json

            spool_dir = self.config.spool_dir or default_spool_dir()
            stats = self.stats()
            stats.update({"pid": os.getpid(), "workload_uid": self.identity.workload_uid,
                          "pod_name": self.identity.pod_name, "written_at": _time(), "spool_dir": spool_dir})
            data = json.dumps(stats, default=str).encode()
        except (OSError, TypeError, ValueError) as exc:
            get_logger().debug("could not build stats: %r", exc)
            return
        # File names hold 255 bytes; a workload uid may have 256 characters (and any of them).
        uid = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.identity.workload_uid[:100])
        name = f"{uid}-{os.getpid()}.json"
        for directory in (os.path.join(spool_dir, "stats"), stats_fallback_dir(spool_dir)):
            if directory is None:
                continue
            try:
                write_file_atomic(os.path.join(directory, name), data)
            except OSError as exc:
                get_logger().debug("could not write stats to %s: %r", directory, exc)

    def _maybe_emit(self):
        if time.monotonic() - self._stats_written > 30.0:
            self._write_stats()
        if self._pending_since is not None and time.monotonic() - self._pending_since >= self.config.flush_interval:
            self._emit_all()

    def _emit_all(self):
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._pending_count = 0
        self._pending_since = None
        ranks = self._current_ranks()
        for (source, run_id, rank), points in pending.items():
            batch = MetricBatch(source=source, run_id=run_id, rank=rank, local_rank=ranks.local_rank,
                                node_rank=ranks.node_rank, world_size=ranks.world_size,
                                points=points, identity=self.identity, exporter=self.counters.exporter())
            self.counters.batches += 1
            call_sinks(self._sinks or (), "report_metrics", batch)
            self._call("lens_report_metrics", batch=batch)
        get_logger().debug("✓ Metrics data queued for reporting (%d batches)", len(pending))

    def _run_dict(self, state: RunState) -> Dict[str, Any]:
        ident = self.identity
        ranks = self._current_ranks()
        out = {"source": "wandb", "workload_uid": ident.workload_uid, "pod_name": ident.pod_name,
               "pod_uid": ident.pod_uid, "run_id": state.run_id, "rank": ranks.rank,
               "timestamp": _time(), "config": _jsonable(state.config),
               "summary": _jsonable(state.summary)}
        out.update(state.info)
        out.setdefault("status", "finished" if state.finished else "running")
        return out

    def _report_run(self, state, event):
        run = self._run_dict(state)
        run["event"] = event
        if event == "started":
            self._call("lens_run_started", run=run)
        call_sinks(self._sinks or (), "report_run", run, event)
        self._call("lens_report_run", run=run, event=event)

    def _report_detection(self, force=False):
        if self._detector is None:
            return
        payload = self._detector.build(self._claims, [s for s in self._runs.values()])
        key = _detection_key(payload)
        if not force and key == self._detection_sent:
            return
        self._detection_sent = key
        self.counters.detections += 1
        call_sinks(self._sinks or (), "report_detection", payload)
        self._call("lens_report_detection", detection=payload)
        det = payload.get("detection", {})
        get_logger().debug("framework detection: wrapper=%s base=%s method=%s confidence=%.2f",
                           det.get("wrapper"), det.get("base"), det.get("method"), det.get("confidence", 0))
        get_logger().debug("✓ Detection data queued for reporting")

    def _call(self, hook_name, **kwargs):
        if self._pm is None:
            return []
        from .plugins import call_safely

        return call_safely(getattr(self._pm.hook, hook_name), **kwargs)


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
    suppress = patching.suppress_state
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
            if type(data) is dict and not (active[0] and suppress.depth):
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


def _detection_key(payload):
    det = payload.get("detection", {})
    hints = payload.get("hints", {})
    evidence = payload.get("evidence", {})
    # A framework's method or extras can change without changing the chosen pair (pytorch
    # claimed exactly after being listed heuristically; a ZeRO stage learnt later).
    per_framework = tuple(sorted(
        (layer, name, info.get("method"), info.get("confidence"),
         tuple(sorted((k, str(v)) for k, v in info.items() if k not in ("method", "confidence", "indicators"))))
        for layer in ("wrapper_frameworks", "base_frameworks")
        for name, info in (evidence.get(layer) or {}).items()))
    return (det.get("wrapper"), det.get("base"), det.get("method"), round(det.get("confidence", 0), 3),
            tuple(hints.get("wrapper_frameworks", ())), tuple(hints.get("base_frameworks", ())), per_framework)


def _jsonable(value, depth=0):
    """A JSON-safe copy of config/summary values (non-JSON leaves become strings)."""
    if depth > MAX_VALUE_DEPTH:  # the server refuses bodies deeper than limits.MAX_JSON_DEPTH
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, float):
        return normalize.wire_value(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    number = normalize.to_float(value)
    if number is not None:
        return normalize.wire_value(number)
    return str(value)


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
