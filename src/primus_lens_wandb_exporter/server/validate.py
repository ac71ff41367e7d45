"""Validation of ingest bodies: one tight loop per request, no per-point objects.

Over 400 lines on purpose: it is one job, the checks of the ingest bodies, and the
msgspec fast path of ``/wandb/metrics`` sits next to the full validator it must agree
with (tests/server/test_server_validate_fast.py checks both build the same batch);
split, each half would have to be read with the other open.

pydantic per point would cost more than the database write at the throughput
Lens targets, so bodies are parsed with orjson and checked here by hand.  A
request-level problem raises :class:`ApiError` naming the offending field (the
whole request is refused); a bad **point** (``metrics[12].value``) is refused
alone: it is listed in the batch's ``rejected`` and every other point is kept.
The fields, their order, bounds and enums are read from the body Structs of
:mod:`primus_lens_wandb_exporter.wire` (which take them from ``limits``, which the
exporter checks before sending); the msgspec fast path decodes into the same Structs.
"""

from __future__ import annotations

import math
import time
from itertools import chain
from operator import attrgetter
from typing import Any, Callable, Dict, List, Optional, Union

import msgspec
import orjson

from .. import wire
from ..limits import (EXPORTER_COUNTERS, MAX_ABS_STEP, MAX_COUNTER, MAX_JSON_DEPTH, MAX_NAME_LEN, MAX_POINTS_PER_REQUEST,
                      MAX_RANK, MAX_ROW, MAX_TEXT_LEN, metric_name_problem, text_problem)
from .errors import ApiError
from .storage.model import MAX_REJECTED_LISTED, SeriesBatch

#: Timestamps above this many epoch seconds (year ~5138) are taken as milliseconds,
#: a common client mistake that would otherwise put points far in the future.
_MS_THRESHOLD = 1e11

_NONFINITE = wire.NONFINITE
#: Each body's top-level fields as the wire Structs declare them (name -> bounds).
_M = wire.field_bounds(wire.MetricsRequest)
_D = wire.field_bounds(wire.DetectionRequest)
_DD = wire.field_bounds(wire.Detected)
_R = wire.field_bounds(wire.RunRequest)


def bad(field: str, message: str) -> ApiError:
    """A 400 naming ``field``."""
    return ApiError(400, "invalid_field", f"{field}: {message}", field)


def _too_deep(v: Any, room: int) -> bool:
    """True when ``v`` holds more than ``room`` containers nested in each other."""
    t = v.__class__
    if t is dict:
        items = v.values()
    elif t is list:
        items = v
    else:
        return False
    if room <= 0:
        return True
    # Type sets are built in C: a list of 5,000 flat point objects is cleared in two
    # passes (~1 ms) instead of one Python call per point (~6 ms).
    kinds = set(map(type, items))
    if dict not in kinds and list not in kinds:
        return False
    if room == 1:
        return True
    if kinds == _DICT_ONLY:
        inner = set(map(type, chain.from_iterable(map(dict.values, items))))
        if dict not in inner and list not in inner:
            return False
    # Recursion, bounded by ``room`` (at most MAX_JSON_DEPTH frames).
    room -= 1
    for c in items:
        ct = c.__class__
        if (ct is dict or ct is list) and _too_deep(c, room):
            return True
    return False


_DICT_ONLY = {dict}


def check_depth(body: Any, raw_len: int = 0) -> Any:
    """Refuse a parsed body nested deeper than MAX_JSON_DEPTH (a 400 naming the
    top-level field that holds the deep value); return it otherwise.

    One limit for every ingest path, so nothing is stored that the read side (orjson
    writes at most 255 levels, and an answer wraps a value in a few more) cannot serve.
    """
    if not _too_deep(body, MAX_JSON_DEPTH):
        return body
    field = "body"
    if body.__class__ is dict:
        field = next((k for k, v in body.items() if _too_deep(v, MAX_JSON_DEPTH - 1)), "body")
    raise ApiError(400, "too_deep", f"{field}: JSON nested deeper than {MAX_JSON_DEPTH} levels", field)


def _str(body: dict, key: str, prefix: str, default: str = "", max_len: int = MAX_TEXT_LEN,
         required: bool = False) -> str:
    v = body.get(key)
    if v is None:
        if required:
            raise bad(prefix + key, "is required")
        return default
    why = text_problem(v, max_len)
    if why:
        raise bad(prefix + key, why)
    return v


def _uid(body: dict, prefix: str, fields: Dict[str, wire.Bounds]) -> str:
    b = fields["workload_uid"]
    v = _str(body, "workload_uid", prefix, max_len=b.max_len, required=b.required)
    if not v:
        raise bad(prefix + "workload_uid", "must not be empty")
    return v


def _int(body: dict, key: str, prefix: str, default: int, lo: int = 0, hi: int = MAX_RANK) -> int:
    # lo/hi: the field's bounds in its wire Struct (callers pass them).
    v = body.get(key)
    if v is None:
        return default
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is not int:
        raise bad(prefix + key, "must be an integer")
    if not lo <= v <= hi:
        raise bad(prefix + key, f"must be between {lo} and {hi}")
    return v


def _ts_ms(v: Any, field: str) -> float:
    """Epoch seconds (float) -> epoch ms."""
    if type(v) is int:
        v = float(v)
    elif type(v) is not float:
        raise bad(field, "must be a number (epoch seconds)")
    if not (0.0 <= v < 1e14):
        raise bad(field, "must be epoch seconds (values from 1e11 up are read as milliseconds), "
                         "at least 0 and below 1e14")
    return v if v >= _MS_THRESHOLD else v * 1000.0


def _opt_ts_ms(body: dict, key: str, prefix: str) -> Optional[float]:
    v = body.get(key)
    return None if v is None else _ts_ms(v, prefix + key)


def _obj(body: dict, key: str, prefix: str) -> Optional[dict]:
    v = body.get(key)
    if v is None:
        return None
    if type(v) is not dict:
        raise bad(prefix + key, "must be an object")
    # PostgreSQL's JSON cannot hold NUL: one stored value broke every /runs filter, sort and
    # column over config or summary (a 500 for everyone).  Refused on both databases alike.
    if b"\\u0000" in orjson.dumps(v):  # rare; a hit may be an escaped backslash: look closer
        where = _nul_path(v)
        if where is not None:
            raise bad(prefix + key + where, "must not contain NUL characters")
    return v


def _nul_path(v: Any) -> Optional[str]:
    """The path (``.key`` / ``[i]``, at most ~200 characters) of the first string in ``v``, key or
    value, holding NUL; None when there is none.  Linear in the size of ``v``: the path is built
    only for the hit (building it for every item was quadratic in deep, long keys)."""
    stack = [(v, 0)]  # (value, depth) with the keys of the items above it in ``trail``
    trail: list = []
    while stack:
        x, depth = stack.pop()
        del trail[depth:]
        if type(x) is tuple:  # (key, child): descend into child under key
            k, child = x
            trail.append(k)
            if type(k) is str and "\x00" in k:
                return _path_text(trail)
            stack.append((child, depth + 1))
            continue
        if type(x) is str:
            if "\x00" in x:
                return _path_text(trail)
            continue
        items = x.items() if type(x) is dict else enumerate(x) if type(x) is list else ()
        stack.extend(((k, c), depth) for k, c in reversed(list(items)))
    return None


def _path_text(trail: list) -> str:
    text = "".join(f".{k}" if type(k) is str else f"[{k}]" for k in trail)
    return text if len(text) <= 200 else text[:197] + "..."


def _strings(body: dict, key: str, prefix: str) -> Optional[list]:
    v = body.get(key)
    if v is not None and (type(v) is not list or any(type(t) is not str for t in v)):
        raise bad(prefix + key, "must be an array of strings")
    if v is not None and any("\x00" in t for t in v):
        raise bad(prefix + key, "must not contain NUL characters")  # like _obj's
    return v


def require_object(body: Any, field: str = "body") -> dict:
    """The parsed body must be a JSON object."""
    if type(body) is not dict:
        raise bad(field, "must be a JSON object")
    return body


def metrics_batch(body: Any, prefix: str = "") -> SeriesBatch:
    """Validate one ``/wandb/metrics`` body."""
    body = require_object(body, prefix.rstrip(".") or "body")
    M = _M
    uid = _uid(body, prefix, M)
    source = _str(body, "source", prefix, "wandb", M["source"].max_len) or "wandb"
    run_id = _str(body, "run_id", prefix, "", M["run_id"].max_len)
    rank = _int(body, "rank", prefix, 0, M["rank"].lo, M["rank"].hi)
    for k in ("local_rank", "node_rank"):
        _int(body, k, prefix, 0, M[k].lo, M[k].hi)
    _int(body, "world_size", prefix, 1, M["world_size"].lo, M["world_size"].hi)
    _str(body, "batch_id", prefix, "", M["batch_id"].max_len)
    req_ts = _opt_ts_ms(body, "timestamp", prefix)
    default_ts = req_ts if req_ts is not None else time.time() * 1000.0
    batch = SeriesBatch(uid, source, run_id, rank, _str(body, "pod_name", prefix, "", M["pod_name"].max_len),
                         _str(body, "pod_uid", prefix, "", M["pod_uid"].max_len),
                         _str(body, "namespace", prefix, "", M["namespace"].max_len))
    batch.exporter = exporter_stats(body.get("exporter"))
    metrics = body.get("metrics")
    rows = body.get("rows")
    if metrics is not None and type(metrics) is not list:
        raise bad(prefix + "metrics", "must be an array")
    if rows is not None and type(rows) is not list:
        raise bad(prefix + "rows", "must be an array")
    if points_in(body) > MAX_POINTS_PER_REQUEST:
        raise too_many_points(prefix + ("rows" if rows else "metrics"))
    if metrics:
        _check_points(batch, metrics, default_ts, prefix)
    if rows:
        _check_rows(batch, rows, default_ts, prefix)
    return batch


def points_in(body: Any) -> int:
    """The points of a parsed metrics body: its ``metrics`` and its ``rows``' values (0 for what is not
    the expected shape: that is refused by the checks, not counted)."""
    if body.__class__ is not dict:
        return 0
    metrics, rows = body.get("metrics"), body.get("rows")
    n = len(metrics) if metrics.__class__ is list else 0
    if rows.__class__ is list:
        n += sum(len(r["values"]) for r in rows if r.__class__ is dict and r.get("values").__class__ is dict)
    return n


def _check_points(batch: SeriesBatch, metrics: list, default_ts: float, prefix: str) -> None:
    """The points of ``metrics``, each stored or refused alone, into ``batch``."""
    by_name = batch.series
    nonfinite = _NONFINITE
    float_t, int_t, str_t, dict_t = float, int, str, dict
    rejected = batch.rejected

    def reject(i, key, message):
        # One refused point: counted, the first MAX_REJECTED_LISTED listed; the rest go on.
        batch.rejected_count += 1
        if len(rejected) < MAX_REJECTED_LISTED:
            field = f"{prefix}metrics[{i}]" + (f".{key}" if key else "")
            rejected.append({"index": i, "field": field, "error": "invalid_field",
                             "message": f"{field}: {message}"})

    # The loop below is the ingest hot path: class identity checks, locals only,
    # errors built only on failure; points land directly in per-series dicts.
    for i, p in enumerate(metrics):
        if p.__class__ is not dict_t:
            reject(i, "", "must be an object")
            continue
        name = p.get("name")
        if name.__class__ is not str_t or not 0 < len(name) <= MAX_NAME_LEN or "\x00" in name:
            reject(i, "name", metric_name_problem(name) if name is not None else "is required")
            continue
        v = p.get("value")
        tv = v.__class__
        if tv is not float_t:
            if tv is int_t:
                try:
                    v = float(v)
                except OverflowError:
                    v = math.inf if v > 0 else -math.inf
            elif tv is str_t and v in nonfinite:
                v = nonfinite[v]
            else:
                reject(i, "value", _VALUE_MESSAGE)
                continue
        pos = _row_step(p.get("row"), p.get("step"))
        if pos.__class__ is str_t:
            key, _, why = pos.partition(":")
            reject(i, key, why)
            continue
        ts = p.get("timestamp")
        if ts is None:
            ts = default_ts
        elif ts.__class__ is float_t and 0.0 <= ts < _MS_THRESHOLD:
            ts = ts * 1000.0
        else:
            ts = _point_ts_ms(ts)
            if ts is None:
                reject(i, "timestamp", _TS_MESSAGE)
                continue
        pts = by_name.get(name)
        if pts is None:
            pts = by_name[name] = {}
        pts[pos[0]] = (v, ts, pos[1])


def _value(v: Any):
    """A point's value as a float, or None when refused (``_VALUE_MESSAGE``)."""
    tv = v.__class__
    if tv is float:
        return v
    if tv is int:
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    if tv is str:
        return _NONFINITE.get(v)
    return None


_VALUE_MESSAGE = 'must be a number or one of "NaN", "Infinity", "-Infinity"'


def _check_rows(batch: SeriesBatch, rows: list, default_ts: float, prefix: str) -> None:
    """The points of ``rows`` (after those of ``metrics``): a bad row (not an object, bad
    ``values``, ``step``, ``row`` or ``timestamp``) refuses its points, a bad name or value
    refuses that point alone; ``index`` is the row's position in ``rows``."""
    by_name = batch.series
    rejected = batch.rejected

    def reject(i, key, message, count=1):
        batch.rejected_count += count
        if len(rejected) < MAX_REJECTED_LISTED:
            field = f"{prefix}rows[{i}]" + (f".{key}" if key else "")
            rejected.append({"index": i, "field": field, "error": "invalid_field", "message": f"{field}: {message}"})

    batch.rows += len(rows)
    for i, r in enumerate(rows):
        if r.__class__ is not dict:
            reject(i, "", "must be an object")
            continue
        values = r.get("values")
        if values.__class__ is not dict:
            reject(i, "values", "must be an object of names to values" if values is not None else "is required")
            continue
        pos = _row_step(r.get("row"), r.get("step"))
        if pos.__class__ is str:
            key, _, why = pos.partition(":")
            reject(i, key, why, len(values) or 1)
            continue
        ts = r.get("timestamp")
        if ts is None:
            ts = default_ts
        else:
            ts = _point_ts_ms(ts)
            if ts is None:
                reject(i, "timestamp", _TS_MESSAGE, len(values) or 1)
                continue
        row, point = pos[0], (ts, pos[1])
        for name, v in values.items():
            if not 0 < len(name) <= MAX_NAME_LEN or "\x00" in name:
                reject(i, "values", f"a name {metric_name_problem(name)}")
                continue
            number = _value(v)
            if number is None:
                reject(i, "values", f"{name!r} {_VALUE_MESSAGE}")
                continue
            pts = by_name.get(name)
            if pts is None:
                pts = by_name[name] = {}
            pts[row] = (number,) + point


def too_many_points(field: str) -> ApiError:
    """The 413 of a request with more than MAX_POINTS_PER_REQUEST points."""
    return ApiError(413, "too_many_points", f"{field}: at most {MAX_POINTS_PER_REQUEST} points per request", field)


_TS_MESSAGE = ("must be epoch seconds (a number; values from 1e11 up are read as milliseconds), "
               "at least 0 and below 1e14")


def _point_ts_ms(v: Any) -> Optional[float]:
    """A point's timestamp (epoch s, or ms from 1e11) in epoch ms, or None when invalid."""
    if v.__class__ is int:
        v = float(v)
    elif v.__class__ is not float:
        return None
    if not 0.0 <= v < 1e14:
        return None
    return v if v >= _MS_THRESHOLD else v * 1000.0


def _row_step(row: Any, step: Any):
    """``(row, step)`` of a point, or ``"row:<why>"`` / ``"step:<why>"`` when refused.

    An integer step stays an int (as on the fast path; the database stores it as a double).

    ``row`` is the W&B history row (an integer 0..MAX_ROW), ``step`` the chart x
    (any finite number, ``abs <= MAX_ABS_STEP``).  Old clients send only ``step``:
    it is the row too when it is a non-negative integer; a missing step is the row.
    """
    if row is not None:
        if row.__class__ is float and row.is_integer():
            row = int(row)
        if row.__class__ is not int or not 0 <= row <= MAX_ROW:
            return f"row:must be an integer between 0 and {MAX_ROW}"
    if step is None:
        step = 0 if row is None else row
    elif step.__class__ is not int and step.__class__ is not float:
        return "step:must be a number"
    if not abs(step) <= MAX_ABS_STEP:  # also refuses NaN
        return f"step:must be a finite number of absolute value at most {MAX_ABS_STEP:.0f}"
    if row is None:
        if step.__class__ is float and step.is_integer():
            row = int(step)
        elif step.__class__ is int:
            row = step
        if row is None or not 0 <= row <= MAX_ROW:
            return ("row:is required when step is not an integer between 0 and "
                    f"{MAX_ROW} (a fractional or negative step needs the W&B row it was logged in)")
    if step.__class__ is int and not -MAX_ROW <= step <= MAX_ROW:
        step = float(step)  # 2**63 (abs <= MAX_ABS_STEP, which is 2**63 as a double) fits no BIGINT binding
    return row, step


def exporter_stats(obj: Any) -> Optional[Dict[str, int]]:
    """The exporter health counters of a body: None when absent or not an object;
    counters that are not an int 0..MAX_COUNTER under one of the names of
    ``limits.EXPORTER_COUNTERS`` are left out (they never fail the request: the points
    matter more than the report)."""
    if obj.__class__ is not dict:
        return None
    return {k: v for k, v in obj.items()
            if k in EXPORTER_COUNTERS and v.__class__ is int and 0 <= v <= MAX_COUNTER}


# -- the fast path of /wandb/metrics ------------------------------------------------
# msgspec decodes a well-formed body straight into wire.MetricsRequest, checking types and
# ranges in C (about half the time of orjson + the loop above).  It only ever accepts:
# anything it rejects, and anything the checks after it doubt, goes to metrics_batch()
# on the orjson parse, which names the offending field.  test_server_validate_fast.py
# checks that both paths agree on what they accept and store.

_decode_body = msgspec.json.Decoder(wire.MetricsRequest).decode


def _fast_metrics_batch(raw: bytes) -> Optional[SeriesBatch]:
    """The batch of a well-formed ``/wandb/metrics`` body, or None to take the full path."""
    if b"\\u0000" in raw:  # a NUL escape somewhere: let the full path find and name it
        return None
    try:
        body = _decode_body(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        # RecursionError: a value nested past msgspec's limit; the full path answers
        # the depth limit's 400.  Unknown fields are refused by the structs for the
        # same reason: msgspec would skip them unchecked, at any depth.
        return None
    exp = body.exporter
    if exp.__class__ is list or (exp.__class__ is dict and any(v.__class__ in (dict, list) for v in exp.values())):
        return None  # nested counters: let the full path apply the depth limit
    req_ts = body.timestamp
    if req_ts is None:
        default_ts = time.time() * 1000.0
    elif 0.0 <= req_ts < _MS_THRESHOLD:
        default_ts = req_ts * 1000.0
    elif _MS_THRESHOLD <= req_ts < 1e14:
        default_ts = req_ts
    else:
        return None
    batch = SeriesBatch(body.workload_uid, body.source or "wandb", body.run_id or "", body.rank or 0,
                         body.pod_name or "", body.pod_uid or "", body.namespace or "",
                         exporter=exporter_stats(body.exporter))
    metrics = body.metrics
    rows = body.rows
    if rows:
        n_points = len(metrics) + sum(map(len, map(_values, rows)))
        if n_points > MAX_POINTS_PER_REQUEST or not _fast_rows(batch, rows, default_ts):
            return None
    if not metrics:
        if rows:
            _store_rows(batch, rows)
        return batch
    if len(metrics) > MAX_POINTS_PER_REQUEST:
        return None
    by_name = batch.series
    nonfinite = _NONFINITE
    str_t, int_t, float_t = str, int, float
    two_63 = 2.0**63
    for p in metrics:
        v = p.value
        if v.__class__ is str_t:
            v = nonfinite.get(v)
            if v is None:
                return None
        ts = p.timestamp
        if ts is None:
            ts = default_ts
        elif 0.0 <= ts < _MS_THRESHOLD:
            ts = ts * 1000.0
        elif not _MS_THRESHOLD <= ts < 1e14:
            return None
        # Row and step ranges were checked by msgspec; an int step stays an int
        # (the database stores it as a double), which saves a call per point.
        row = p.row
        step = p.step
        if row is None:
            # An old client's point: its step is the row (a non-negative integer).
            if step.__class__ is int_t and step >= 0:
                row = step
            elif step is None:
                row = step = 0
            elif step.__class__ is float_t and 0.0 <= step < two_63 and step.is_integer():
                row = int(step)
            else:
                return None  # refused per point by the full validator
        elif step is None:
            step = row
        pts = by_name.get(p.name)
        if pts is None:
            pts = by_name[p.name] = {}
        pts[row] = (v, ts, step)
    if rows:
        _store_rows(batch, rows)
    return batch


_values = attrgetter("values")


def _fast_rows(batch: SeriesBatch, rows: list, default_ts: float) -> bool:
    """Resolve each decoded ``wire.Row``'s row, step and timestamp (in place: the points are
    stored after ``metrics``, by :func:`_store_rows`); False when one needs the full path.

    The same rules as the points loop of :func:`_fast_metrics_batch`, which has them inline
    (a function call per point there would be ~10 % of the decode); here they run once per row."""
    for r in rows:
        ts = r.timestamp
        if ts is None:
            r.timestamp = default_ts
        elif 0.0 <= ts < _MS_THRESHOLD:
            r.timestamp = ts * 1000.0
        elif not _MS_THRESHOLD <= ts < 1e14:
            return False
        row = r.row
        step = r.step
        if row is None:
            if step.__class__ is int and step >= 0:
                r.row = step
            elif step is None:
                r.row = r.step = 0
            elif step.__class__ is float and 0.0 <= step < 2.0**63 and step.is_integer():
                r.row = int(step)
            else:
                return False  # refused per row by the full validator
        elif step is None:
            r.step = row
    batch.rows = len(rows)
    return True


def _store_rows(batch: SeriesBatch, rows: list) -> None:
    """The points of resolved rows (:func:`_fast_rows`) into ``batch.series``: the last wins."""
    by_name = batch.series
    nonfinite = _NONFINITE
    str_t = str
    for r in rows:
        row, ts, step = r.row, r.timestamp, r.step
        for name, v in r.values.items():
            if v.__class__ is str_t:
                v = nonfinite[v]  # one of the three: the Literal was checked by msgspec
            pts = by_name.get(name)
            if pts is None:
                pts = by_name[name] = {}
            pts[row] = (v, ts, step)


def metrics_batch_bytes(raw: bytes, parse: Callable[[bytes], Any]) -> SeriesBatch:
    """``metrics_batch(parse(raw))``, with the msgspec fast path for well-formed bodies."""
    # Large bodies are bounded and counted before either path builds anything (a point's tags
    # and a row's values are dicts to msgspec too); below _PRECOUNT_BYTES these return at once.
    refuse_too_wide(raw)
    refuse_too_many_points(raw, _count_metrics)
    batch = _fast_metrics_batch(raw)
    if batch is not None:
        return batch
    return metrics_batch(parse(raw))


# Counting the points of a body before parsing it: msgspec skims each point into an
# empty struct (~30 bytes) where orjson would build a dict of objects (~600 bytes), so
# a 50 MB body of 1.3M points is refused 413 without the ~750 MB a full parse costs.
# ``rows`` are skimmed as raw bytes: a row's value is at least one ":", so most bodies
# are counted by that bound alone; past it the rows are decoded (~110 bytes a value),
# and past _MAX_COLONS they are refused uncounted.  The fields are found by msgspec, not
# by a text search: a key can be written escaped ("\u0072ows"), and a tag can say "rows".
class _Skip(msgspec.Struct, gc=False):
    pass


class _CountRow(msgspec.Struct, gc=False):
    values: Any = None


class _CountPart(msgspec.Struct, gc=False):
    metrics: Optional[List[_Skip]] = None
    rows: msgspec.Raw = msgspec.Raw()  # empty when absent


class _CountBatch(msgspec.Struct, gc=False):
    metrics: Union[_CountPart, List[_CountPart], None] = None


#: Bodies smaller than this are parsed without a count first (the count costs ~0.8 ms per
#: 5,000 points; parsing a 4 MiB body costs tens of MiB, so only large bodies need it).
_PRECOUNT_BYTES = 4 * 1024 * 1024
#: Rows with more ":" than this are refused 413 uncounted (100,000 points as rows have at most
#: ~5 a point: the value's, and the row's values, step, row and timestamp when it has one value).
_MAX_COLONS = 8 * MAX_POINTS_PER_REQUEST
_count_metrics = msgspec.json.Decoder(_CountPart).decode
_count_batch = msgspec.json.Decoder(_CountBatch).decode
_count_rows = msgspec.json.Decoder(List[_CountRow]).decode


def _too_many(parts: List[_CountPart]) -> bool:
    """Whether the skimmed parts hold more than MAX_POINTS_PER_REQUEST points."""
    n = sum(len(p.metrics or ()) for p in parts)
    rows = [bytes(p.rows) for p in parts if p.rows]
    if n > MAX_POINTS_PER_REQUEST:
        return True
    colons = sum(r.count(b":") for r in rows)
    if n + colons <= MAX_POINTS_PER_REQUEST:
        return False
    if colons > _MAX_COLONS:
        return True
    for r in rows:
        try:
            n += sum(len(x.values) for x in _count_rows(r) if x.values.__class__ is dict)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            continue  # not an array of rows: the validator says what is wrong
        if n > MAX_POINTS_PER_REQUEST:
            return True
    return False


#: A body over _PRECOUNT_BYTES with more "," than this is refused 413 before it is parsed: a
#: parse builds ~30-80 bytes per JSON value, and parts of a body no count reads (an unknown
#: field, a point's unknown key) would otherwise cost up to ~800 MiB for a 64 MiB body.  A
#: body of 100,000 points with tags has ~1M.
MAX_COMMAS = 2_000_000


def refuse_too_wide(raw: bytes) -> None:
    """413 ``too_many_values`` for a large body with more than MAX_COMMAS "," (at least one per JSON
    value after the first of each array or object), before anything is built from it."""
    if len(raw) >= _PRECOUNT_BYTES and raw.count(b",") > MAX_COMMAS:
        raise ApiError(413, "too_many_values", f"body: more than {MAX_COMMAS} JSON values (counted by ',') "
                       f"in a body over {_PRECOUNT_BYTES // 2**20} MiB", "body")


def refuse_too_many_points(raw: bytes, decode=None) -> None:
    """413 for a ``/wandb/metrics`` or (default) ``/wandb/batch`` body with more than
    MAX_POINTS_PER_REQUEST points, counted before the body is parsed.  A body this
    count cannot read (not the expected shape) is left to the full validator."""
    if len(raw) < _PRECOUNT_BYTES:
        return
    try:
        body = (decode or _count_batch)(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return
    if decode is _count_metrics:
        parts = [body]
    else:
        m = body.metrics
        parts = [p for p in (m if isinstance(m, list) else [m]) if p is not None]
    if _too_many(parts):
        raise too_many_points("rows" if any(p.rows for p in parts) else "metrics")


def metrics_list(body: Any, field: str) -> List[SeriesBatch]:
    """``metrics`` of a batch body: one metrics body or a list of them."""
    if type(body) is list:
        return [metrics_batch(b, f"{field}[{i}].") for i, b in enumerate(body)]
    return [metrics_batch(body, field + ".")]


_METHODS = (*_DD["method"].values, "")


def detection(body: Any, prefix: str = "") -> dict:
    """Validate one ``/wandb/detection`` body into the dict the store expects."""
    body = require_object(body, prefix.rstrip(".") or "body")
    D = _D
    out = {"workload_uid": _uid(body, prefix, D),
           "source": _str(body, "source", prefix, "wandb", D["source"].max_len) or "wandb",
           "type": _str(body, "type", prefix, "framework_detection_raw", D["type"].max_len),
           "version": _str(body, "version", prefix, "", D["version"].max_len),
           "pod_uid": _str(body, "pod_uid", prefix, "", D["pod_uid"].max_len),
           "pod_name": _str(body, "pod_name", prefix, "", D["pod_name"].max_len),
           "namespace": _str(body, "namespace", prefix, "", D["namespace"].max_len),
           "run_id": _str(body, "run_id", prefix, "", D["run_id"].max_len),
           "rank": _int(body, "rank", prefix, 0, D["rank"].lo, D["rank"].hi),
           "timestamp_ms": _opt_ts_ms(body, "timestamp", prefix),
           "evidence": _obj(body, "evidence", prefix),
           "hints": _obj(body, "hints", prefix)}
    det = _obj(body, "detection", prefix)
    if det is None:
        det = _from_hints(out["hints"])
    else:
        p = prefix + "detection."
        method = _str(det, "method", p, "heuristic", 32)
        if method not in _METHODS:
            raise bad(p + "method", 'must be "exact" or "heuristic"')
        conf = det.get("confidence")
        if conf is not None:
            if type(conf) not in (int, float) or type(conf) is bool or not 0.0 <= conf <= 1.0:
                raise bad(p + "confidence", "must be a number between 0 and 1")
            conf = float(conf)
        det = {"wrapper": _str(det, "wrapper", p, None, _DD["wrapper"].max_len) or None,
               "base": _str(det, "base", p, None, _DD["base"].max_len) or None,
               "method": method or "heuristic", "confidence": conf}
    out["detection"] = det
    return out


def _from_hints(hints: Optional[dict]) -> dict:
    """Seed clients send only ``hints``: take their first wrapper/base as a heuristic."""
    hints = hints or {}

    def first(key):
        v = hints.get(key)
        if type(v) is list and v and type(v[0]) is str:
            return v[0][:MAX_NAME_LEN].replace("\x00", "")
        return None

    conf = hints.get("confidence")
    conf = float(conf) if type(conf) in (int, float) and type(conf) is not bool and 0 <= conf <= 1 else None
    return {"wrapper": first("wrapper_frameworks"), "base": first("base_frameworks"), "method": "heuristic",
            "confidence": conf}


# The message lists them in lifecycle order; the set is the Struct's.
_EVENT_ORDER = ("started", "config", "summary", "finished")
_EVENTS = (*sorted(_R["event"].values, key=_EVENT_ORDER.index), "")


def run(body: Any, prefix: str = "") -> dict:
    """Validate one ``/wandb/run`` body."""
    body = require_object(body, prefix.rstrip(".") or "body")
    R = _R
    out = {"workload_uid": _uid(body, prefix, R),
           "source": _str(body, "source", prefix, "wandb", R["source"].max_len) or "wandb",
           "pod_name": _str(body, "pod_name", prefix, "", R["pod_name"].max_len),
           "pod_uid": _str(body, "pod_uid", prefix, "", R["pod_uid"].max_len),
           "run_id": _str(body, "run_id", prefix, "", R["run_id"].max_len),
           "rank": _int(body, "rank", prefix, 0, R["rank"].lo, R["rank"].hi),
           "timestamp_ms": _opt_ts_ms(body, "timestamp", prefix),
           "exit_code": _int(body, "exit_code", prefix, None, R["exit_code"].lo, R["exit_code"].hi)}
    event = _str(body, "event", prefix, "", 32)
    if event not in _EVENTS:
        raise bad(prefix + "event", "must be one of " + ", ".join(_EVENTS[:-1]))
    out["event"] = event or None
    # status is documented as an enum but stored as sent (any name), as it always was.
    for k in ("project", "name", "entity", "group", "mode", "status"):
        v = _str(body, k, prefix, None, R[k].max_len or MAX_NAME_LEN)
        out[k] = v
    out["tags"] = _strings(body, "tags", prefix)
    out["config"] = _obj(body, "config", prefix)
    out["summary"] = _obj(body, "summary", prefix)
    out["summary_removed"] = _strings(body, "summary_removed", prefix)
    return out


def run_list(body: Any, field: str) -> List[dict]:
    """``run`` of a batch body: one run body or a list."""
    if type(body) is list:
        return [run(b, f"{field}[{i}].") for i, b in enumerate(body)]
    return [run(body, field + ".")]
