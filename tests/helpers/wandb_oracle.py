"""The oracle: which points Lens must hold for a W&B run, read from W&B's own record.

``wandb_expected_points(run_dir)`` reads the offline run's ``.wandb`` file -- the
transaction log wandb-core writes, the same records it uploads to the W&B server -- and
derives every point from it: one per numeric history value, identified by ``(name, row)``
where ``row`` is the history row's ``_step``, with the ``step`` the user charts it by.

Why this is independent of the product code:

- the rows, the values, the ``_step`` of each row and the step-metric values W&B filled
  in (``step_sync``) are *W&B's* output, not a re-implementation of its rules: commit=False
  accumulation, explicit and stale steps, step-only rows and summary/history order are
  all already resolved in the file. Nothing of ``primus_lens_wandb_exporter`` is imported;
- the only rule applied here is the one that cannot be read from a row: which
  ``define_metric`` step metric governs a key. It is taken from W&B's own metric records
  with wandb-core's semantics (``core/internal/runmetric``: an explicit name wins; else the
  key is bound, once and for good, to a ``prefix*`` glob defined before the row that
  first logged it; a later definition of the same name or glob is merged, unless
  ``overwrite``). Where several globs match a new key wandb-core picks one arbitrarily
  (Go map order); the oracle takes the longest prefix, the one reading a user expects.

Then ``step`` = the value of that step metric in the same row (W&B has put it there when
``step_sync``), else the row (a step metric no rule covers is charted by row; one its own
glob covers, by its own value, as W&B's chart of it does). Values follow what
the exporter accepts (``core/normalize.py``): numbers, bools as 0/1, NaN/±Inf as the wire
strings "NaN"/"Infinity"/"-Infinity"; strings, media, lists are not points. W&B-internal
keys (a top-level name starting with ``_``: ``_step``, ``_runtime``, ``_timestamp``,
``_wandb``) are skipped, except the exporter's own opt-in ``_primus_*`` system metrics,
and so are the names the user guide reserves (FAQ Q2: ``step``, ``run_id`` ...) -- as
points only: their values still give other keys their step.

``wandb_summary(run_dir)`` is W&B's final run summary from the same file: its summary records
(the updates wandb-core writes after each history row, by its own summary rules, and the
program's explicit writes) applied in order; ``lens_summary`` reads the one Lens stores and
``assert_same_summary`` compares them key by key (dotted paths).

The other readers give the same shape for what the product produced:
``lens_points`` (the Lens query API, ``x=row``) and ``jsonl_points`` (the exporter's
local JSONL sink). ``assert_same_points`` compares and lists every difference.
"""

import glob
import json
import math
import os
from typing import Dict, Optional, Tuple

from helpers.exporter import get_json, wandb_records

Key = Tuple[str, int]          # (metric name, W&B history row)
Point = Tuple[float, object]   # (step, value); value a float or "NaN"/"Infinity"/"-Infinity"


class Points(dict):
    """``{(name, row): (step, value)}``; ``duplicates`` lists keys a reader saw more than once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.duplicates = []

    def put(self, key, point):
        if key in self:
            self.duplicates.append((key, self[key], point))
        self[key] = point


def wire(value):
    """A value as the Lens wire carries it (JSON has no NaN)."""
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _number(value):
    """The number a W&B history value stands for as a Lens point, or None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _item_key(item):
    return item.key or ".".join(item.nested_key)


#: Names the user guide reserves (FAQ Q2, "Metadata fields are filtered").
GUIDE_RESERVED = frozenset({"step", "run_id", "source", "history", "created_at", "updated_at"})


def _internal(name):
    return (name.startswith("_") and not name.startswith("_primus_")) or name in GUIDE_RESERVED


class _Metrics:
    """wandb-core's metric definitions, fed by the run's metric records in order."""

    def __init__(self):
        self.defined = {}   # name -> {"step": str, "sync": bool}
        self.globs = {}     # glob ("prefix*") -> {"step": str, "sync": bool}

    def record(self, metric):
        if metric.name:
            table, key = self.defined, metric.name
        elif metric.glob_name:
            table, key = self.globs, metric.glob_name
        else:
            return  # an explicit x axis only
        prev = {} if metric._control.overwrite else dict(table.get(key, {}))
        if metric.step_metric:
            prev["step"] = metric.step_metric
        prev["sync"] = prev.get("sync", False) or metric.options.step_sync
        table[key] = prev

    def step_metric(self, name):
        """The step metric of ``name`` (binding it to a glob on first sight, as wandb-core does)."""
        if name not in self.defined and not name.startswith("_"):
            matches = [g for g in self.globs if name.startswith(g[:-1] if g.endswith("*") else g)]
            if matches:
                self.defined[name] = dict(self.globs[max(matches, key=len)])
        spec = self.defined.get(name)
        return spec.get("step") if spec else None


def wandb_expected_points(run_dir) -> Points:
    """Every point of the offline run in ``run_dir`` (``.../wandb/offline-run-*``) per W&B's record."""
    metrics = _Metrics()
    out = Points()
    for rec in wandb_records(run_dir):
        which = rec.WhichOneof("record_type")
        if which == "metric":
            metrics.record(rec.metric)
            continue
        if which != "history":
            continue
        row = {_item_key(i): json.loads(i.value_json) for i in rec.history.item}
        index = row.get("_step", rec.history.step.num)
        # Bind new keys to globs in the row's order first: a row binds all its keys at once.
        for name in row:
            metrics.step_metric(name)
        for name, raw in row.items():
            if _internal(name):
                continue
            value = _number(raw)
            if value is None:
                continue
            step_name = metrics.step_metric(name)
            step = index
            if step_name:
                step_value = _number(row.get(step_name))
                if step_value is not None and math.isfinite(step_value):
                    step = step_value
            out.put((name, int(index)), (step, wire(value)))
    return out


def summary_only_values(run_dir) -> Dict[str, object]:
    """Final summary values of keys that never appeared in W&B's history (HF's
    ``train_runtime`` ...): W&B holds them only in the summary; Lens also keeps each as a
    point (see ``assert_same_points(summary_only=...)``)."""
    history_keys, summary = set(), {}
    for rec in wandb_records(run_dir):
        which = rec.WhichOneof("record_type")
        if which == "history":
            history_keys.update(_item_key(i) for i in rec.history.item)
        elif which == "summary":
            for item in rec.summary.update:
                summary[_item_key(item)] = json.loads(item.value_json)
            for item in rec.summary.remove:
                summary.pop(_item_key(item), None)
    out = {}
    for name, raw in summary.items():
        value = _number(raw)
        if name not in history_keys and not _internal(name) and value is not None:
            out[name] = wire(value)
    return out


def _fold_summary(run_dir):
    """W&B's final summary: its summary records (explicit writes, and the updates wandb-core
    writes after each history row) applied in order, as ``wandb sync`` applies them."""
    tree = {}
    for rec in wandb_records(run_dir):
        if rec.WhichOneof("record_type") != "summary":
            continue
        for item in rec.summary.update:
            path = [item.key] if item.key else list(item.nested_key)
            node = tree
            for part in path[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[path[-1]] = json.loads(item.value_json)
        for item in rec.summary.remove:
            path = [item.key] if item.key else list(item.nested_key)
            node = tree
            for part in path[:-1]:
                node = node.get(part) if isinstance(node.get(part), dict) else {}
            node.pop(path[-1], None)
    return tree


def flat_summary(tree, prefix="") -> Dict[str, object]:
    """A summary ``{"a": {"b": 1}, "loss": {"min": 0.1}}`` as ``{"a.b": 1.0, "loss.min": 0.1}``
    (dotted paths, the names Lens gives nested metrics); numbers and bools as floats, NaN/±Inf
    as the wire strings; strings as they are."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_summary(value, name + "."))
        else:
            number = _number(value)
            out[name] = wire(number) if number is not None else value
    return out


def wandb_summary(run_dir) -> Dict[str, object]:
    """The final summary of the offline run in ``run_dir`` per W&B's ``.wandb`` record, in
    :func:`flat_summary`'s shape, without W&B's own keys (``_step``, ``_runtime``, ``_wandb``
    ...) and the names the user guide reserves (not metrics in Lens) -- media values too
    (a ``_type`` dict), which are not summary values in Lens."""
    tree = {k: v for k, v in _fold_summary(run_dir).items()
            if not _internal(k) and not (isinstance(v, dict) and "_type" in v)}
    return flat_summary(tree)


def lens_summary(server, workload_uid, run_id=None) -> Dict[str, object]:
    """The summary Lens stores for a run (``GET /api/v1/workloads/{uid}``), in :func:`flat_summary`'s shape."""
    runs = get_json(server, f"/api/v1/workloads/{workload_uid}").get("runs") or []
    if run_id is not None:
        runs = [r for r in runs if r.get("run_id") == run_id]
    assert len(runs) == 1, f"expected one run, Lens has {[r.get('run_id') for r in runs]}"
    return flat_summary(runs[0].get("summary") or {})


def assert_same_summary(expected: Dict[str, object], actual: Dict[str, object], what: str = ""):
    """Key by key: every W&B summary key in Lens with the same value (floats compared exactly,
    so an int 2 is 2.0), no key more."""
    missing = sorted(k for k in expected if k not in actual)
    extra = sorted(k for k in actual if k not in expected)
    different = sorted(k for k in expected if k in actual and not _same_value(expected[k], actual[k], 0.0))
    if missing or extra or different:
        lines = [f"{what or 'summary'}: {len(expected)} W&B keys, {len(actual)} Lens keys; {len(missing)} missing, "
                 f"{len(extra)} extra, {len(different)} different"]
        lines += [f"  missing: {k} = {expected[k]!r}" for k in missing[:20]]
        lines += [f"  extra: {k} = {actual[k]!r}" for k in extra[:20]]
        lines += [f"  different: {k}: W&B {expected[k]!r}, Lens {actual[k]!r}" for k in different[:20]]
        raise AssertionError("\n".join(lines))


def lens_points(server, workload_uid, run_id=None, rank=None, data_source="wandb") -> Points:
    """What the Lens query API holds for a workload, in the oracle's shape."""
    body = get_json(server, f"/api/v1/workloads/{workload_uid}/metrics/data", data_source=data_source,
                    x="row", run_id=run_id, rank=None if rank is None else str(rank))
    out = Points()
    for p in body["data"]:
        assert "row" in p, f"the server does not return rows yet: {p}"
        out.put((p["metric_name"], int(p["row"])), (p["iteration"], wire(p["value"])))
    return out


def jsonl_points(output_path_or_file, rank=None, run_id=None, source="wandb") -> Points:
    """What the exporter wrote to its local JSONL sink (``PRIMUS_LENS_WANDB_OUTPUT_PATH``:
    the directory, searched for every ``wandb_metrics.jsonl``, or one such file)."""
    path = str(output_path_or_file)
    files = [path] if os.path.isfile(path) else sorted(
        glob.glob(os.path.join(path, "**", "wandb_metrics.jsonl"), recursive=True))
    assert files, f"no wandb_metrics.jsonl under {path}"
    out = Points()
    for name in files:
        with open(name, encoding="utf-8") as fh:
            for line in fh:
                p = json.loads(line)
                if p.get("source", "wandb") != source:
                    continue
                if rank is not None and p.get("rank") != rank:
                    continue
                if run_id is not None and p.get("run_id") != run_id:
                    continue
                assert "row" in p, f"the exporter does not write rows: {p}"
                out.put((p["name"], int(p["row"])), (p["step"], wire(p["value"])))
    return out


def _same_value(a, b, rel_tol):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a == b or (rel_tol > 0 and math.isclose(a, b, rel_tol=rel_tol))


def assert_same_points(expected: Dict[Key, Point], actual: Dict[Key, Point], what: str = "",
                       summary_only: Optional[Dict[str, object]] = None, rel_tol: float = 0.0):
    """Fail with counts and the first 20 of each kind unless ``actual`` is ``expected``.

    ``row`` is the key and must match exactly; so must ``step`` (a number: 3 == 3.0, but
    3.5 != 3). Values are compared exactly unless ``rel_tol`` is given. Duplicates a reader
    saw (the same (name, row) twice) count as extra. ``summary_only`` (from
    :func:`summary_only_values`): names W&B holds only in its summary; each must be in
    ``actual`` (any row), its last row holding the summary's value, and is then left out.
    """
    actual = Points(actual)
    actual.duplicates = list(getattr(actual, "duplicates", []))
    problems = []
    for name, value in (summary_only or {}).items():
        rows = sorted(row for (n, row) in actual if n == name)
        if not rows:
            problems.append(f"summary-only {name!r}: not in Lens")
            continue
        last = actual[(name, rows[-1])][1]
        if not _same_value(value, last, rel_tol):
            problems.append(f"summary-only {name!r}: W&B {value!r}, Lens {last!r} at row {rows[-1]}")
        for row in rows:
            del actual[(name, row)]
    missing = sorted(k for k in expected if k not in actual)
    extra = sorted(k for k in actual if k not in expected)
    different = []
    for key in sorted(k for k in expected if k in actual):
        (es, ev), (as_, av) = expected[key], actual[key]
        if not (float(es) == float(as_) and _same_value(ev, av, rel_tol)):
            different.append((key, expected[key], actual[key]))
    duplicates = getattr(actual, "duplicates", []) or getattr(expected, "duplicates", [])
    if missing or extra or different or duplicates or problems:
        lines = [f"{what or 'points'}: {len(expected)} expected, {len(actual)} actual; "
                 f"{len(missing)} missing, {len(extra)} extra, {len(different)} different, "
                 f"{len(duplicates)} duplicated"]
        lines += [f"  missing (name, row) -> (step, value): {k} -> {expected[k]}" for k in missing[:20]]
        lines += [f"  extra: {k} -> {actual[k]}" for k in extra[:20]]
        lines += [f"  different: {k}: W&B {e} vs {a}" for k, e, a in different[:20]]
        lines += [f"  duplicated: {k}: {a} then {b}" for k, a, b in duplicates[:20]]
        lines += [f"  {p}" for p in problems[:20]]
        raise AssertionError("\n".join(lines))


def expected_by_row(points: Dict[Key, Point]) -> Dict[int, Dict[str, Point]]:
    """``{row: {name: (step, value)}}``: readable when a test names a few rows."""
    out = {}
    for (name, row), point in sorted(points.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.setdefault(row, {})[name] = point
    return out


__all__ = ["wandb_expected_points", "summary_only_values", "lens_points", "jsonl_points",
           "assert_same_points", "expected_by_row", "Points", "wire", "wandb_summary", "lens_summary",
           "flat_summary", "assert_same_summary"]

