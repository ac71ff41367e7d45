"""One run's records into what the live exporter would have sent: history rows through
W&B's step rules (``core.steps.StepRules``) into points, summary-only keys, the run record
and a detection report marked as an import."""

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import limits
from ..core import normalize
from ..core.steps import StepRules
from ..sinks.http import ENDPOINT_DETECTION, ENDPOINT_METRICS, ENDPOINT_RUN
from .reader import WandbFileError, read_records
from .sender import DeliveryError


@dataclass
class RunResult:
    """What importing one file did (the ``--json`` output lists these)."""

    file: str
    run_id: str = ""
    project: Optional[str] = None
    name: Optional[str] = None
    workload_uid: str = ""
    rows: int = 0
    points: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    filtered: int = 0
    failed: int = 0
    error: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.rejected and not self.failed


def _value(item) -> Any:
    return _loads(item.value_json)


def _loads(text: str) -> Any:
    try:
        return _fast_loads(text)
    except ValueError:  # NaN / Infinity, which W&B writes and orjson refuses
        return json.loads(text)


try:  # several times faster than the stdlib for the many tiny documents of a history
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _fast_loads = json.loads


def _item_path(item) -> Tuple[str, ...]:
    return tuple(item.nested_key) if len(item.nested_key) else (item.key,)


def _nest(out: Dict, path: Tuple[str, ...], value):
    for part in path[:-1]:
        nxt = out.get(part)
        if not isinstance(nxt, dict):
            nxt = out[part] = {}
        out = nxt
    out[path[-1]] = value


def _is_wandb_object(value) -> bool:
    # Media, histograms, tables ... are stored as JSON objects with a "_type"; the live
    # exporter sees the wandb object itself and filters it as non-numeric.
    return isinstance(value, dict) and "_type" in value


def _row_dict(record) -> Dict[str, Any]:
    """A history row as the nested dict the user logged (W&B stores nested keys as paths)."""
    out: Dict[str, Any] = {}
    for item in record.history.item:
        value = _value(item)
        _nest(out, _item_path(item), None if _is_wandb_object(value) else value)
    return out


def default_workload_uid(project: Optional[str], run_id: str) -> str:
    """``wandb-<project>-<run id>``: stable, so a re-import lands in the same workload."""
    uid = f"wandb-{project or 'unknown'}-{run_id or 'unknown'}"
    return uid[:limits.MAX_UID_LEN]


_EXACT_INT = 2.0 ** 53


class RunImporter:
    """Reads one ``.wandb`` file and sends it to Lens (or only counts, with ``sender=None``)."""

    def __init__(self, path: str, sender, workload_uid: Optional[str], rank: int, batch_size: int,
                 pod_name: Optional[str] = None, progress=None):
        self.path = path
        self.sender = sender
        self.rank = rank
        self.batch_size = max(1, min(batch_size, limits.MAX_POINTS_PER_REQUEST))
        self.forced_uid = workload_uid
        self.pod_name = pod_name
        self.progress = progress
        self.result = RunResult(file=path)
        # wandb-core's define_metric rules; the rows themselves are already W&B's in the file.
        self.rules = StepRules()
        self.run_info: Dict[str, Any] = {}
        self.config: Dict[str, Any] = {}
        self.summary: Dict[Tuple[str, ...], str] = {}  # path -> value_json
        self.telemetry_imports: set = set()
        self.cli_version: Optional[str] = None
        self.exit_code: Optional[int] = None
        self.started_at: Optional[float] = None  # the run's own clock (seconds)
        self.runtime: Optional[float] = None
        self.host: Optional[str] = None
        self.history_keys: set = set()
        self.pending_summary: Dict[str, Any] = {}
        self.last_row: Optional[Tuple[int, Dict[str, float], float]] = None
        self.first_row_ts: Optional[float] = None
        self.batch: List[Dict[str, Any]] = []
        self.filtered_reasons: Dict[str, int] = {}

    # ------------------------------------------------------------------ reading
    def run(self) -> RunResult:
        res = self.result
        if self.sender is not None:
            self.sender.begin()
        try:
            stats: Dict[str, int] = {}
            for record in read_records(self.path, self.progress, stats):
                self._on_record(record)
            if stats.get("unfinished_bytes"):
                res.notes.append(f"the file ends inside a record ({stats['unfinished_bytes']} bytes: the run is "
                                 "still being written, or its process was killed); its complete records were imported")
        except (WandbFileError, DeliveryError) as exc:
            res.error = str(exc)
        except OSError as exc:
            res.error = f"{self.path}: cannot read ({exc.strerror or exc})"
        if not self.run_info and res.error is None:
            res.error = f"{self.path}: no run record in the file (not a complete W&B run)"
        if not self.run_info:
            return res
        try:
            if self.pending_summary and self.last_row is not None:
                row, values, ts = self.last_row
                self._summary_points(row, values, ts)
            self._flush_points()
            self._send_run()
            if self.sender is not None:
                self.sender.end(res)
        except DeliveryError as exc:
            res.error = f"{res.error}; {exc}" if res.error else str(exc)
            return res
        if res.error and res.rows:
            res.notes.append(f"the {res.rows} rows before the problem were {'read' if self.sender is None else 'imported'}")
        return res

    def _on_record(self, record):
        which = record.WhichOneof("record_type")
        if which == "history":
            self._on_history(record)
        elif which == "run":
            self._on_run(record.run)
        elif which == "metric":
            m = record.metric
            self.rules.define(m.glob_name or m.name, m.step_metric or None, m.options.step_sync,
                              m._control.overwrite)
        elif which == "summary":
            self._on_summary(record.summary)
        elif which == "config":
            for item in record.config.update:
                if _item_path(item)[0] != "_wandb":
                    _nest(self.config, _item_path(item), _value(item))
        elif which == "telemetry":
            tel = record.telemetry
            for imports in (tel.imports_init, tel.imports_finish):
                self.telemetry_imports.update(f.name for f, v in imports.ListFields() if v is True)
            self.cli_version = tel.cli_version or self.cli_version
        elif which == "exit":
            self.exit_code = record.exit.exit_code
            self.runtime = float(record.exit.runtime) if record.exit.runtime else None
        elif which == "environment":
            self.host = record.environment.host or self.host

    def _on_run(self, run):
        self.result.run_id = run.run_id
        self.host = run.host or self.host
        if run.start_time.seconds:
            self.started_at = run.start_time.seconds + run.start_time.nanos / 1e9
        self.run_info = {"project": run.project or None, "name": run.display_name or None,
                         "entity": run.entity or None, "group": run.run_group or None,
                         "tags": list(run.tags)}
        self.result.project, self.result.name = self.run_info["project"], self.run_info["name"]
        for item in run.config.update:
            if _item_path(item)[0] != "_wandb":
                _nest(self.config, _item_path(item), _value(item))
        self.result.workload_uid = self.forced_uid or default_workload_uid(run.project, run.run_id)

    def _on_summary(self, summary):
        # wandb-core writes a summary update before every row: kept as text, parsed once at the end.
        raw = self.summary
        for item in summary.update:
            path = _item_path(item)
            raw.pop(path, None)  # the latest update goes last (nested paths are applied in order)
            raw[path] = item.value_json
            key = path[0]
            # A key the run never logged to history (HF's train_runtime ...) is a point of
            # the row logged next, as the live exporter sends it (recorder._on_summary).
            if key not in self.history_keys and not normalize.name_problem(key):
                value = _loads(item.value_json)
                if not _is_wandb_object(value):
                    _nest(self.pending_summary, path, value)
        for item in summary.remove:
            gone = _item_path(item)
            for path in [p for p in raw if p[:len(gone)] == gone]:
                del raw[path]

    def _final_summary(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for path, text in self.summary.items():
            if not path[0].startswith("_"):  # W&B's own _step, _runtime, _timestamp, _wandb
                _nest(out, path, _loads(text))
        return out

    def _on_history(self, record):
        data = _row_dict(record)
        row = data.get("_step", record.history.step.num)
        if not isinstance(row, int):
            row = int(record.history.step.num)
        ts = data.get("_timestamp")
        ts = float(ts) if isinstance(ts, (int, float)) else time.time()
        self.result.rows += 1
        self.history_keys.update(data.keys())
        points, filtered = normalize.flatten(data)
        self._count_filtered(filtered)
        values = dict(points)
        self._add(points, values, row, ts)
        if self.pending_summary:
            # wandb-core writes the summary of a row's own keys just before the row: those
            # are history, not summary-only keys.
            for key in data:
                self.pending_summary.pop(key, None)
            self._summary_points(row, values, ts)
        self.last_row = (row, values, ts)
        if self.first_row_ts is None or ts < self.first_row_ts:
            self.first_row_ts = ts  # the earliest row: _timestamp need not grow row by row

    def _summary_points(self, row, values, ts):
        pending, self.pending_summary = self.pending_summary, {}
        points, filtered = normalize.flatten(pending)
        self._count_filtered(filtered)
        merged = dict(values)
        merged.update(points)
        self._add(points, merged, row, ts)

    def _count_filtered(self, filtered):
        for name, reason in filtered:
            # W&B's own underscore keys (_step, _runtime, _timestamp) are bookkeeping, not user data.
            if reason == "wandb internal key":
                continue
            self.result.filtered += 1
            self.filtered_reasons[reason] = self.filtered_reasons.get(reason, 0) + 1

    def _add(self, points, values, row, ts):
        wire = normalize.wire_value
        for name, value in points:
            step = self.rules.chart_step(name, values, row)
            if isinstance(step, float) and step.is_integer() and abs(step) <= _EXACT_INT:
                step = int(step)  # 3.0 travels as 3; beyond 2**53 a float stays a float
            self.batch.append({"name": name, "value": value if value - value == 0 else wire(value),
                               "step": step, "row": row, "timestamp": ts})
            self.result.points += 1
            if len(self.batch) >= self.batch_size:
                self._flush_points()

    # ------------------------------------------------------------------ sending
    def _identity(self):
        from ..core.identity import Identity

        pod = self.pod_name or f"wandb-import-{self.host or 'unknown'}"
        return Identity(pod_name=pod[:limits.MAX_UID_LEN], pod_uid="", namespace="default",
                        workload_uid=self.result.workload_uid, pod_name_from_env=bool(self.pod_name),
                        workload_from_env=bool(self.forced_uid))

    def _flush_points(self):
        if not self.batch:
            return
        points, self.batch = self.batch, []
        if self.sender is None:
            return
        if not self.result.workload_uid:
            raise DeliveryError(f"{self.path}: history rows before the run record; cannot tell the run")
        from ..core.recorder import MetricBatch

        batch = MetricBatch(source="wandb", run_id=self.result.run_id, rank=self.rank, local_rank=0,
                            node_rank=0, world_size=1, points=points, identity=self._identity())
        self.sender.submit(ENDPOINT_METRICS, batch.to_payload(), len(points))
        self.result.sent += len(points)

    def _send_run(self):
        if self.sender is None:
            return
        ident = self._identity()
        run = {"source": "wandb", "workload_uid": ident.workload_uid, "pod_name": ident.pod_name,
               "pod_uid": "", "run_id": self.result.run_id, "rank": self.rank,
               "config": _jsonable(self.config), "summary": _jsonable(self._final_summary()), "mode": "import"}
        run.update(self.run_info)
        # Two events, as the live exporter reports them, at the run's own times (Lens keeps
        # the first as the start and the last as the end).
        last_row_ts = self.last_row[2] if self.last_row else None
        started = self.started_at or last_row_ts or time.time()
        if self.first_row_ts is not None:
            # The run record's start time is taken by wandb's service, which can be a few ms
            # after the first row's client-side _timestamp: a run starts no later than its earliest row.
            started = min(started, self.first_row_ts)
        if self.runtime is not None:
            ended = started + self.runtime
        else:
            ended = max(started, last_row_ts or started)
        self.sender.submit(ENDPOINT_DETECTION, self._detection(ident))
        self.sender.submit(ENDPOINT_RUN, dict(run, event="started", status="running", timestamp=started))
        self.sender.submit(ENDPOINT_RUN, dict(run, event="finished", timestamp=ended, exit_code=self.exit_code,
                                              status="failed" if self.exit_code else "finished"))

    def _detection(self, ident) -> Dict[str, Any]:
        """The live exporter's detection shape, from what the file tells: config keys and the
        frameworks W&B saw imported (its telemetry); marked as an import."""
        import dataclasses

        from ..core.detection import DetectionContext, Evidence, build_payload
        from ..core.detection.heuristics import frameworks, lens_detect_frameworks

        context = DetectionContext(modules=frozenset(), environ={}, wandb_config=self.config)
        # Versions installed here say nothing about the imported run's environment.
        found = {e.name: dataclasses.replace(e, version=None) for e in lens_detect_frameworks(context)}
        known = frameworks()
        for module, name in _TELEMETRY_FRAMEWORKS:
            if module in self.telemetry_imports and name in known:
                old = found.get(name)
                indicators = (old.indicators if old else ()) + (f"wandb_telemetry:{module}",)
                found[name] = Evidence(name=name, layer=known[name].layer, method="heuristic",
                                       confidence=max(0.5, old.confidence if old else 0.0), indicators=indicators)
        wandb_info = {"project": self.run_info.get("project"), "name": self.run_info.get("name"),
                      "id": self.result.run_id, "mode": "import"}
        payload = build_payload([], list(found.values()), ident, {}, wandb_info, frozenset())
        payload["rank"] = self.rank
        evidence = payload["evidence"]
        evidence.pop("pytorch", None)  # that of the importing process, not of the run
        evidence["system"] = {"hostname": self.host}
        evidence.pop("hardware", None)
        evidence["import"] = {"tool": "primus-lens import-wandb", "file": os.path.abspath(self.path),
                              "wandb_version": self.cli_version, "imported_at": time.time()}
        payload["hints"]["primary_indicators"] = (["import:wandb-file"] + payload["hints"]["primary_indicators"])[:20]
        return payload


# wandb telemetry import flags -> our framework names (the integrations' declared Frameworks).
_TELEMETRY_FRAMEWORKS = (("torch", "pytorch"), ("pytorch_lightning", "lightning"), ("lightning", "lightning"),
                         ("transformers", "transformers"), ("jax", "jax"), ("tensorflow", "tensorflow"),
                         ("keras", "keras"))


def _jsonable(value):
    from ..core.recorder.stats import _jsonable as jsonable

    return jsonable(value)
