"""The wandb run/step tracker: one RunState per W&B run, its history rows by wandb's own
rules (``core/steps.py``), its summary by wandb's (``summary.py``), summary-only values, run
and detection reports."""

import logging
import operator
import time
from typing import Any, Dict, Optional

from ...limits import MAX_NAME_LEN
from ...sinks import call_sinks
from .. import normalize
from ..log import get_logger, log_once
from ..steps import StepRules
from .records import _time
from .stats import _jsonable, _wire_text
from .summary import RunSummary

#: Seconds between provisional summaries of a running run (sent when changed).
SUMMARY_INTERVAL = 30.0


def _text(value):
    """A run's name, project, entity or group as the server takes it: a string of at most
    ``limits.MAX_NAME_LEN`` characters without NUL or lone surrogates (U+FFFD instead), or None:
    one field the server refuses would refuse the whole run report."""
    if value is None:
        return None
    return _wire_text(str(value))[:MAX_NAME_LEN]


class RunState:
    """What the worker knows of one W&B run; its history rows follow wandb's (core/steps.py)."""

    def __init__(self, run, recorder):
        self.ref = run
        self.run_id = str(_attr(run, "id", "") or "")
        starting = int(_attr(run, "starting_step", 0) or _attr(run, "_starting_step", 0) or 0)
        self.rules = StepRules(starting, emittable=_is_point_name)
        self.history_keys = set()  # keys logged (slow path; the fast path's are in ``latest``)
        self.summary = RunSummary()
        self.latest = self.summary.latest  # the fast path's one update per row (Worker._drain)
        self.summary_sent = None  # the summary last reported (provisional reports skip an unchanged one)
        self.summary_tops = set()  # top-level summary keys ever reported: one gone since is "removed"
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
            "project": _text(_attr(run, "project", None)),
            "name": _text(_attr(run, "name", None)),
            "entity": _text(_attr(run, "entity", None)),
            "group": _text(_attr(run, "group", None)),
            "tags": _jsonable(list(_attr(run, "tags", ()) or ())),
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


class RunTracker:
    """W&B runs as the worker sees them (mixin of Recorder; worker thread only)."""

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
        state.summary.row(row_points)
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
            if not provisional:  # W&B's summary has a row once W&B wrote it
                state.summary.row(row_points)
            self._add_points(row_points, "wandb", state.run_id)
        if state.pending_summary:
            row = rules.last_row if rules.last_row is not None else rules.row
            self._add_points(self._summary_row_points(state, row, ts), "wandb", state.run_id)

    def _on_summary(self, state, items, removed, ts):
        if removed:
            state.summary.remove(removed)
        history = state.history_keys
        latest = state.latest
        # Keys that never appeared in history (HF's train_runtime ...) become points; keys
        # that did are only summaries of history and are not re-sent.
        fresh = {k: v for k, v in items.items() if k not in history and k not in latest}
        state.summary.set(items, history)
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

    def _run_dict(self, state: RunState, summary: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The run record (``summary``: the JSON-safe summary, when the caller already built it)."""
        ident = self.identity
        ranks = self._current_ranks()
        out = {"source": "wandb", "workload_uid": ident.workload_uid, "pod_name": ident.pod_name,
               "pod_uid": ident.pod_uid, "run_id": state.run_id, "rank": ranks.rank,
               "timestamp": _time(), "config": _jsonable(state.config),
               "summary": _jsonable(state.summary.as_dict()) if summary is None else summary}
        # The server merges summaries by top-level key (records of a run may arrive out of order,
        # through several replicas or replayed from the spool), so a key W&B deleted
        # (``del run.summary[k]``) is named; every record repeats it until the key comes back.
        tops = state.summary_tops
        tops.update(out["summary"])
        removed = sorted(tops.difference(out["summary"]))
        if removed:
            out["summary_removed"] = removed
        out.update(state.info)
        out.setdefault("status", "finished" if state.finished else "running")
        return out

    def _report_run(self, state, event, summary=None):
        run = self._run_dict(state, summary)
        run["event"] = event
        state.summary_sent = run["summary"]
        if event == "started":
            self._call("lens_run_started", run=run)
        call_sinks(self._sinks or (), "report_run", run, event)
        self._call("lens_report_run", run=run, event=event)

    def _report_summaries(self):
        """Running runs whose summary changed since last reported: a provisional summary
        (flush, and every ``SUMMARY_INTERVAL`` s), so that Lens shows one before finish."""
        self._summary_reported = time.monotonic()
        for state in list(self._runs.values()):
            if state.finished:
                continue
            summary = _jsonable(state.summary.as_dict())
            if summary != state.summary_sent:
                self._report_run(state, "summary", summary)

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
