"""The wire bodies of ``/api/v1/wandb/*``, described once (shared by exporter and server; pure).

Each body is a msgspec Struct here, with its bounds from :mod:`.limits`.  From these
come: the server's fast decoder of ``/wandb/metrics`` (``msgspec.json.Decoder
(MetricsRequest)``), the bounds and enums its full validator checks
(:func:`field_bounds`), and the request bodies of the OpenAPI document
(:func:`openapi_components`).  The exporter names the endpoints from here.

The fast decoder only ever *accepts*: a body it refuses goes to the full validator,
which names the offending field (and accepts more: unknown fields, nulls, the
lower-case non-finite spellings of old clients, a missing ``metrics``).  So a
Struct may be stricter than the server, never looser; the document describes what
a client should send.  Imports only msgspec and limits.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

import msgspec
from msgspec import Meta

from .limits import MAX_ABS_STEP, MAX_NAME_LEN, MAX_POINTS_PER_REQUEST, MAX_RANK, MAX_ROW, MAX_UID_LEN

#: The ingest endpoints, relative to the API base (``.../api/v1``).
ENDPOINT_METRICS = "/wandb/metrics"
ENDPOINT_DETECTION = "/wandb/detection"
ENDPOINT_RUN = "/wandb/run"
ENDPOINT_BATCH = "/wandb/batch"

#: JSON has no NaN/Infinity: they travel as these strings (the server also takes the
#: lower-case spellings some clients send; the protocol documents the first three).
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf,
             "nan": math.nan, "inf": math.inf, "-inf": -math.inf}
NonFinite = Literal["NaN", "Infinity", "-Infinity"]

_Uid = Annotated[str, Meta(min_length=1, max_length=MAX_UID_LEN)]
_Id = Annotated[str, Meta(max_length=MAX_UID_LEN)]
_Name = Annotated[str, Meta(max_length=MAX_NAME_LEN)]
_Rank = Annotated[int, Meta(ge=0, le=MAX_RANK)]
_Epoch = Annotated[float, Meta(ge=0, description="epoch seconds (values from 1e11 up are read as milliseconds)")]
_Object = Dict[str, Any]
_Strings = List[str]


# gc=False: a point holds no containers, so the collector need not track the 5,000 of a
# batch (decoding one 5,000-point body: 1.64 -> 1.42 ms).  Unknown fields are refused by
# the fast decoder (the full path takes them): msgspec would skip them unchecked, at any
# depth, past the JSON depth limit.  Docstrings here are the OpenAPI descriptions.
class Point(msgspec.Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True):
    """One metric value: its name, value and position (row, step) in the run's history."""

    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LEN)]
    value: Union[float, NonFinite]
    step: Union[Annotated[int, Meta(ge=-MAX_ROW, le=MAX_ROW)],
                Annotated[float, Meta(ge=-MAX_ABS_STEP, le=MAX_ABS_STEP)], None] = None
    row: Optional[Annotated[int, Meta(ge=0, le=MAX_ROW, description=(
        "W&B history row (_step) the value was logged in; the point's identity. "
        "Default: step, when that is a non-negative integer"))]] = None
    timestamp: Optional[_Epoch] = None
    tags: Optional[Dict[str, Union[str, float, bool, None]]] = None


class Row(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The points of one W&B history row: ``{name: value}`` sharing its row, step and timestamp.

    The compact form of the exporter's common point (``wandb.log`` of numbers): one
    ``Point`` each would repeat the step and timestamp per value, ~3x the bytes and
    twice the encoding time (docs/protocol.md, *Rows*).  ``row``, ``step`` and
    ``timestamp`` follow the rules of a point's.
    """

    values: Dict[Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LEN)], Union[float, NonFinite]]
    step: Union[Annotated[int, Meta(ge=-MAX_ROW, le=MAX_ROW)],
                Annotated[float, Meta(ge=-MAX_ABS_STEP, le=MAX_ABS_STEP)], None] = None
    row: Optional[Annotated[int, Meta(ge=0, le=MAX_ROW, description=(
        "W&B history row (_step) the values were logged in. Default: step, when that is a non-negative "
        "integer"))]] = None
    timestamp: Optional[_Epoch] = None


# The fields of each body are declared in the order the full validator checks them
# (the first bad one is the one its 400 names).
class MetricsRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of /wandb/metrics: points of one workload, run and rank."""

    workload_uid: _Uid
    source: Optional[_Name] = None
    run_id: Optional[_Id] = None
    rank: Optional[_Rank] = None
    local_rank: Optional[_Rank] = None
    node_rank: Optional[_Rank] = None
    world_size: Optional[_Rank] = None
    batch_id: Optional[_Id] = None
    timestamp: Optional[_Epoch] = None
    pod_name: Optional[_Id] = None
    pod_uid: Optional[_Id] = None
    namespace: Optional[_Id] = None
    # Any: counters that are not an int 0..2**63-1 are left out, never refused.
    exporter: Annotated[Any, Meta(
        description="the exporter process's cumulative health counters (optional)",
        extra_json_schema={"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}})] = None
    # Required in the document (a client sends points); the server also takes a body without.
    metrics: Annotated[List[Point], Meta(max_length=MAX_POINTS_PER_REQUEST)] = msgspec.field(default_factory=list)
    # Points by history row (stored after ``metrics``); the answer's ``rows`` says how many were read.
    rows: Annotated[Optional[List[Row]], Meta(
        description="points grouped by history row (stored after metrics); all points of a request together: "
                    f"at most {MAX_POINTS_PER_REQUEST}")] = None


class Hints(msgspec.Struct, omit_defaults=True):
    wrapper_frameworks: Optional[_Strings] = None
    base_frameworks: Optional[_Strings] = None
    possible_frameworks: Optional[_Strings] = None
    confidence: Annotated[Any, Meta(description='a number 0..1 or a word such as "high" (seed clients)')] = None
    primary_indicators: Optional[_Strings] = None
    framework_layers: Optional[_Object] = None


class Detected(msgspec.Struct, omit_defaults=True):
    wrapper: Optional[_Name] = None
    base: Optional[_Name] = None
    method: Optional[Literal["exact", "heuristic"]] = None
    confidence: Optional[Annotated[float, Meta(ge=0, le=1)]] = None


class DetectionRequest(msgspec.Struct, omit_defaults=True):
    """The body of /wandb/detection: the frameworks the exporter found."""

    workload_uid: _Uid
    source: Optional[_Name] = None
    type: Optional[_Name] = None
    version: Optional[_Name] = None
    pod_uid: Optional[_Id] = None
    pod_name: Optional[_Id] = None
    namespace: Optional[_Id] = None
    run_id: Optional[_Id] = None
    rank: Optional[_Rank] = None
    timestamp: Optional[_Epoch] = None
    evidence: Optional[_Object] = None
    hints: Optional[Hints] = None
    detection: Optional[Detected] = None


class RunRequest(msgspec.Struct, omit_defaults=True):
    """The body of /wandb/run: a run's lifecycle event (upsert per workload and run)."""

    workload_uid: _Uid
    source: Optional[_Name] = None
    pod_name: Optional[_Id] = None
    pod_uid: Optional[_Id] = None
    run_id: Optional[_Id] = None
    rank: Optional[_Rank] = None
    timestamp: Optional[_Epoch] = None
    exit_code: Optional[Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]] = None
    event: Optional[Literal["started", "config", "summary", "finished"]] = None
    project: Optional[_Name] = None
    name: Optional[_Name] = None
    entity: Optional[_Name] = None
    group: Optional[_Name] = None
    mode: Optional[_Name] = None
    status: Optional[Literal["running", "finished", "failed"]] = None
    tags: Optional[_Strings] = None
    config: Optional[_Object] = None
    summary: Optional[_Object] = None
    # top-level summary keys W&B no longer holds (``del run.summary[k]``): removed after the merge
    summary_removed: Optional[_Strings] = None


class BatchRequest(msgspec.Struct, omit_defaults=True):
    """The body of /wandb/batch: any of the three, stored in one transaction."""

    detection: Optional[DetectionRequest] = None
    metrics: Union[MetricsRequest, List[MetricsRequest], None] = None
    logs: Any = None
    run: Union[RunRequest, List[RunRequest], None] = None


#: Each ingest endpoint's body.
BODIES = {ENDPOINT_METRICS: MetricsRequest, ENDPOINT_DETECTION: DetectionRequest, ENDPOINT_RUN: RunRequest,
          ENDPOINT_BATCH: BatchRequest}


def openapi_components() -> Dict[str, dict]:
    """The JSON schemas of the bodies (and the structs they use), by name, for an
    OpenAPI document's ``components/schemas``; a body refers to ``#/components/schemas/<Name>``."""
    _, components = msgspec.json.schema_components(
        [MetricsRequest, DetectionRequest, RunRequest, BatchRequest], ref_template="#/components/schemas/{name}")
    # The document asks clients for points even though the server takes a body without.
    components["MetricsRequest"]["required"] = ["workload_uid", "metrics"]
    return components


class Bounds(msgspec.Struct, frozen=True):
    """What the full validator checks of one top-level field: its kind ("str", "int",
    "float", "object", "enum", "list", "any"), and max length / int range / enum values."""

    kind: str
    required: bool = False
    max_len: Optional[int] = None
    lo: Optional[int] = None
    hi: Optional[int] = None
    values: Tuple[str, ...] = ()


def _bounds_of(t: Any) -> Bounds:
    from msgspec import inspect as mi

    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        kinds = [x for x in t.types if not isinstance(x, mi.NoneType)]
        t = kinds[0] if len(kinds) == 1 else mi.AnyType()
        if isinstance(t, mi.Metadata):
            t = t.type
    if isinstance(t, mi.StrType):
        return Bounds("str", max_len=t.max_length)
    if isinstance(t, mi.IntType):
        return Bounds("int", lo=t.ge, hi=t.le)
    if isinstance(t, mi.FloatType):
        return Bounds("float")
    if isinstance(t, mi.LiteralType):
        return Bounds("enum", values=tuple(t.values))
    if isinstance(t, (mi.DictType, mi.StructType)):
        return Bounds("object")
    if isinstance(t, mi.ListType):
        return Bounds("list")
    return Bounds("any")


def field_bounds(struct: type) -> Dict[str, Bounds]:
    """``{field name: Bounds}`` of a body Struct, in its declared order."""
    from msgspec import inspect as mi

    return {f.name: msgspec.structs.replace(_bounds_of(f.type), required=f.required)
            for f in mi.type_info(struct).fields}
