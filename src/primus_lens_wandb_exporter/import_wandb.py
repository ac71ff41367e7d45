"""``primus-lens import-wandb PATH``: backfill W&B runs already on disk into Lens.

A run's ``run-<id>.wandb`` file is W&B's own transaction log: a LevelDB-style log (32 KiB
blocks of CRC-checked chunks) of protobuf ``Record`` messages, everything the W&B client
recorded for the run: the run (project, name, tags, config), ``define_metric`` records,
history rows (with ``_step``, the row index, and the step_sync values W&B filled in),
summary updates and the exit code.  wandb 0.31 ships no Python reader of that log (its
reader lives in the Go ``wandb-core``), so :func:`read_records` reads the log format here
and parses each record with wandb's own ``wandb_internal_pb2.Record``.

What Lens receives is what the live exporter would have sent for the same run: every
numeric history key as a point (``row`` = ``_step``, ``step`` = the key's define_metric step
metric in that row, else the row), values normalised by ``core/normalize.py``, the run
record and a detection report saying the data came from an import.  Requests go through
the exporter's own ``HttpSink`` (retries, backoff, token).  Point identity includes the
row, so importing twice replaces instead of duplicating.

wandb is needed only by this command (it is not a dependency of the exporter).
"""

import glob
import json
import math
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import limits
from .core import normalize
from .core.steps import StepRules
from .core.transport import ENDPOINT_DETECTION, ENDPOINT_METRICS, ENDPOINT_RUN

# ------------------------------------------------------------------ the .wandb log format

_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0
_CHUNK = struct.Struct("<IHB")  # crc32 of (type byte + data), length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# W&B seeds each chunk's CRC-32 with the CRC of its type byte.
_TYPE_CRC = [zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in range(_LAST + 1)]


class WandbFileError(Exception):
    """The file is not a readable W&B transaction log (message names file and offset)."""


def read_records(path: str, progress=None, stats: Optional[Dict[str, int]] = None) -> Iterator[Any]:
    """Yield the protobuf ``Record`` messages of a ``.wandb`` file, in order, block by block
    (memory stays flat whatever the file's size).

    Raises :class:`WandbFileError` at the first corrupt chunk (records before it have been
    yielded).  A file that ends inside a record (the run is still being written, or its
    process was killed mid-write) simply ends: what was complete is yielded.
    ``progress(n)`` is called with the bytes consumed; ``stats["unfinished_bytes"]`` is set
    to the size of such an unfinished tail (0 when the file ends on a record boundary).
    """
    pb = _wandb_proto()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise WandbFileError(f"{path}: {size} bytes, too short for a W&B run file")
        ident, magic, version = _HEADER.unpack(head)
        if ident != b":W&B" or magic != 0xBEE1 or version != 0:
            raise WandbFileError(f"{path}: not a W&B run file (header {head!r})")
        base = _HEADER.size  # file offset of ``block``'s first byte
        block = fh.read(_BLOCK - base)
        parts: List[bytes] = []
        start = done = reported = base
        unfinished = False
        while block:
            full = base % _BLOCK + len(block) == _BLOCK  # a complete block, not the file's tail
            pos, n = 0, len(block)
            while pos + _CHUNK.size <= n:
                crc, length, kind = _CHUNK.unpack_from(block, pos)
                if kind == 0 and length == 0 and crc == 0:
                    break  # zeroes to the end of the block
                end = pos + _CHUNK.size + length
                if end > n:
                    if full:
                        raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (length past its block)")
                    unfinished = True  # the tail of an unfinished write
                    break
                chunk = block[pos + _CHUNK.size:end]
                if kind > _LAST or zlib.crc32(chunk, _TYPE_CRC[kind]) & 0xFFFFFFFF != crc:
                    raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (checksum mismatch)")
                if kind == _FULL or kind == _FIRST:
                    if parts:
                        raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (a record's end is missing)")
                    start = base + pos
                elif not parts:
                    raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (a record's start is missing)")
                parts.append(chunk)
                pos = end
                if kind == _FULL or kind == _LAST:
                    record = pb.Record()
                    try:
                        record.ParseFromString(b"".join(parts))
                    except Exception as exc:  # protobuf's DecodeError
                        raise WandbFileError(f"{path}: record at byte {start} is not a W&B record ({exc})") from None
                    parts = []
                    done = base + pos
                    yield record
            if not full and pos < n and any(block[pos:]):
                unfinished = True  # a chunk header cut short
            if progress is not None:
                progress(base + len(block) - reported)
                reported = base + len(block)
            base += len(block)
            block = fh.read(_BLOCK)
    if parts:
        unfinished = True
    if stats is not None:
        stats["unfinished_bytes"] = size - done if unfinished else 0


def _wandb_proto():
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError as exc:
        raise MissingWandb(str(exc)) from None
    return wandb_internal_pb2


class MissingWandb(Exception):
    pass


# ----------------------------------------------------------------------- finding runs


def find_run_files(path: str) -> List[str]:
    """The ``.wandb`` files PATH stands for: a file, a run directory, or a ``wandb/`` directory.

    Raises ``FileNotFoundError`` / ``WandbFileError`` with a message for the user.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    own = sorted(glob.glob(os.path.join(path, "run-*.wandb")))
    if own:
        return own
    runs = []
    for root in (path, os.path.join(path, "wandb")):
        for run_dir in sorted(glob.glob(os.path.join(root, "*run-*"))):
            # latest-run is a symlink to one of the others: skip it, the run is there once.
            if os.path.islink(run_dir) or not os.path.isdir(run_dir):
                continue
            runs.extend(sorted(glob.glob(os.path.join(run_dir, "run-*.wandb"))))
        if runs:
            return runs
    raise WandbFileError(f"{path}: no W&B run here (expected run-*.wandb, a wandb/offline-run-* or "
                         "wandb/run-* directory, or a wandb/ directory holding them)")


# ------------------------------------------------------------------------- one run


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
        if self.first_row_ts is None:
            self.first_row_ts = ts

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
        from .core.identity import Identity

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
        from .core.recorder import MetricBatch

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
            # after the first row's client-side _timestamp: a run starts no later than its first row.
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

        from .core.detection import DetectionContext, Evidence, FRAMEWORKS, build_payload, lens_detect_frameworks

        context = DetectionContext(modules=frozenset(), environ={}, wandb_config=self.config)
        # Versions installed here say nothing about the imported run's environment.
        found = {e.name: dataclasses.replace(e, version=None) for e in lens_detect_frameworks(context)}
        for module, name in _TELEMETRY_FRAMEWORKS:
            if module in self.telemetry_imports and name in FRAMEWORKS:
                old = found.get(name)
                indicators = (old.indicators if old else ()) + (f"wandb_telemetry:{module}",)
                found[name] = Evidence(name=name, layer=FRAMEWORKS[name][0], method="heuristic",
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


# wandb telemetry import flags -> our framework names (core/detection.py FRAMEWORKS).
_TELEMETRY_FRAMEWORKS = (("torch", "pytorch"), ("pytorch_lightning", "lightning"), ("lightning", "lightning"),
                         ("transformers", "transformers"), ("jax", "jax"), ("tensorflow", "tensorflow"),
                         ("keras", "keras"))


def _jsonable(value):
    from .core.recorder import _jsonable as jsonable

    return jsonable(value)


class DeliveryError(Exception):
    pass


class Sender:
    """Delivery through the exporter's own ``HttpSink`` (its checks against limits.py,
    retries with backoff, ``Retry-After``, token), waited for run by run.

    The sink spools what it cannot deliver; here that spool is a private directory, so an
    import never leaves work for another process: whatever is still in it after a wait was
    not delivered, the run is reported as failed, and importing again is the remedy (the
    source file is still there; points are upserted).  Accepted / rejected / filtered are
    the sink's own counters, so they count exactly what the sink learnt from Lens.
    """

    def __init__(self, config):
        import tempfile

        from .core.spool import Spool
        from .core.transport import HttpSink

        self.directory = tempfile.mkdtemp(prefix="primus-lens-import-")
        timeout = max(config.http_timeout, 30.0)  # an import's requests are full batches
        self.sink = HttpSink(config.api_base_url, config.api_token, timeout, config.max_retries,
                             Spool(self.directory, 1 << 40))
        # Long enough for every retry of one request; a down server ends the wait sooner.
        self.wait = max(60.0, config.max_retries * (timeout + 5.0))
        self.unsettled = 0
        self.base: Dict[str, int] = {}
        self.submitted = 0

    def begin(self):
        self.base = dict(self.sink.counters)
        self.submitted = 0

    def submit(self, endpoint: str, payload: Dict[str, Any], points: int = 0):
        self.sink.submit(endpoint, payload, points)
        self.submitted += points
        self.unsettled += 1
        if self.unsettled >= 16:  # bounded memory and spool: let the sender catch up
            self.settle()

    def settle(self):
        self.sink.flush(time.monotonic() + self.wait)
        self.unsettled = 0

    def undelivered(self) -> int:
        """Requests still in the private spool (queued, written ahead or kept)."""
        try:
            return sum(1 for e in os.scandir(self.directory) if e.is_file() and ".json" in e.name
                       and not e.name.startswith("."))
        except OSError:
            return 0

    def end(self, res: "RunResult"):
        """Wait for the run's requests and put what Lens did with them into ``res``."""
        self.settle()
        c = self.sink.counters
        delta = {k: c.get(k, 0) - self.base.get(k, 0) for k in c}
        filtered, ok, rejected = (delta.get("filtered_points", 0), delta.get("sent_points", 0),
                                  delta.get("rejected_points", 0))
        left = self.undelivered()
        # Points in answered requests (ok) include those Lens refused one by one; the rest
        # of the rejected points were in requests refused as a whole.
        whole = max(0, self.submitted - filtered - ok) if not left else 0
        res.filtered += filtered
        res.rejected += rejected
        res.accepted += max(0, ok - max(0, rejected - whole))
        res.sent -= filtered
        if left:
            res.failed = max(0, self.submitted - filtered - ok - rejected)
            raise DeliveryError(f"Lens API {self.sink.base_url} unreachable ({self.sink.last_error}); "
                                f"{left} requests not delivered: run the import again (it is idempotent)")
        if delta.get("rejected_batches", 0) and not rejected:
            raise DeliveryError(f"Lens refused the run/detection report ({self.sink.last_error})")

    def close(self):
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)


# ------------------------------------------------------------------------ the command


def _progress_factory(stream):
    """A per-file byte progress bar: tqdm on a terminal, nothing otherwise (the per-run
    summary line is printed either way)."""
    if not stream.isatty():
        return lambda total, desc: (lambda n: None, lambda: None)
    try:
        from tqdm import tqdm
    except ImportError:
        def plain(total, desc):
            state = {"n": 0}

            def update(n):
                state["n"] += n
                print(f"\r{desc}: {state['n'] * 100 // max(total, 1)}%", end="", file=stream, flush=True)
            return update, lambda: print("\r\033[K", end="", file=stream, flush=True)
        return plain

    def bar(total, desc):
        b = tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=stream, leave=False)
        return b.update, b.close
    return bar


def cmd_import_wandb(args) -> int:
    """Entry point of ``primus-lens import-wandb`` (registered in cli.py)."""
    try:
        _wandb_proto()
    except MissingWandb as exc:
        print(f"import-wandb reads W&B's run files with wandb itself: pip install wandb ({exc})", file=sys.stderr)
        return 2
    try:
        files = find_run_files(args.path)
    except (OSError, WandbFileError) as exc:
        print(f"import-wandb: {exc}", file=sys.stderr)
        return 1
    from .core.config import load_config

    config = load_config()
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sender = None if args.dry_run else Sender(config)
    try:
        return _import_all(args, files, config, sender)
    finally:
        if sender is not None:
            sender.close()


def _import_all(args, files, config, sender) -> int:
    out = sys.stdout
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    uid = args.workload_uid or os.environ.get("WORKLOAD_UID", "").strip() or None
    progress = _progress_factory(sys.stderr)
    results: List[RunResult] = []
    stop = None
    for path in files:
        if stop is not None:
            results.append(RunResult(file=path, error=f"not imported: {stop}"))
            continue
        update, close = progress(_size(path), os.path.basename(path))
        importer = RunImporter(path, sender, uid, args.rank, config.batch_size,
                               pod_name=os.environ.get("POD_NAME", "").strip() or None, progress=update)
        try:
            res = importer.run()
        except Exception as exc:  # a bug of ours: this run is reported, the others still imported
            res = importer.result
            res.error = f"{path}: internal error while importing ({exc!r}); please report it"
        finally:
            close()
        results.append(res)
        if res.error and sender is not None and sender.sink.down:
            stop = "Lens unreachable"
        verb = "would import" if args.dry_run else ("imported" if res.ok else "import incomplete:")
        line = (f"{verb} {res.file}: run {res.run_id or '?'} "
                f"({res.project}/{res.name}) -> workload {res.workload_uid or '?'}: {res.rows} rows, "
                f"{res.points} points" + ("" if args.dry_run else
                                          f", {res.accepted} accepted, {res.rejected} rejected"
                                          + (f", {res.failed} not delivered" if res.failed else ""))
                + (f", {res.filtered} filtered ({_reasons(importer.filtered_reasons)})" if res.filtered else ""))
        if res.error:
            print(f"import-wandb: {res.error}" + "".join(f"; {n}" for n in res.notes), file=sys.stderr)
        else:
            for note in res.notes:
                print(f"import-wandb: {path}: note: {note}", file=sys.stderr)
        if res.run_id or not res.error:
            say(line)
    totals = {k: sum(getattr(r, k) for r in results)
              for k in ("rows", "points", "sent", "accepted", "rejected", "filtered", "failed")}
    failed_runs = sum(1 for r in results if not r.ok)
    say(f"{len(results)} runs ({failed_runs} with problems), {totals['rows']} rows, "
        f"{totals['points']} points" + (" (dry run: nothing sent)" if args.dry_run else
                                        f" sent, {totals['accepted']} accepted, {totals['rejected']} rejected")
        + (f", {totals['filtered']} filtered" if totals["filtered"] else "")
        + (f", {totals['failed']} not delivered" if totals["failed"] else "")
        + ("" if args.dry_run else f" -> {config.api_base_url}"))
    if args.json:
        body = {"runs": [dict(vars(r), ok=r.ok) for r in results], "totals": totals,
                "failed_runs": failed_runs, "dry_run": bool(args.dry_run),
                "api_base_url": None if args.dry_run else config.api_base_url}
        out.write(json.dumps(body, indent=2) + "\n")
    return 1 if failed_runs else 0


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _reasons(reasons: Dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])


def _rank(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= limits.MAX_RANK:
        raise argparse.ArgumentTypeError(f"must be between 0 and {limits.MAX_RANK}")
    return value


def register(sub):
    """Add ``import-wandb`` to the ``primus-lens`` sub-commands."""
    p = sub.add_parser("import-wandb", help="backfill W&B runs already on disk (offline or online run "
                                            "directories, .wandb files) into Lens (idempotent)")
    p.add_argument("path", help="a wandb/offline-run-*/run-* directory, a run-*.wandb file, "
                                "or a wandb/ directory (every run in it)")
    p.add_argument("--workload-uid", help="workload to import into (default: WORKLOAD_UID, else "
                                          "wandb-<project>-<run id> per run)")
    p.add_argument("--rank", type=_rank, default=0, help="rank the points are stored under (default 0)")
    p.add_argument("--dry-run", action="store_true", help="read and count, send nothing")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    p.set_defaults(func=cmd_import_wandb)
