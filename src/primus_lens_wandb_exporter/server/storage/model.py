"""The data model of the Lens store: what a validated request hands to storage, what an
ingest answers, and the column lists every backend writes.

Units: point timestamps are stored as epoch **milliseconds** (double), like
every timestamp the query API returns.

A point is identified by its series and its W&B history **row** (``_step``, an
integer); its chart **step** (the value of its ``define_metric`` step metric, or
the row) is a double stored beside it.  Everything keyed, bucketed or rolled up
(point lookups, rollups, ``after_row``) works on rows; rollup.py's "steps" are
rows.  NaN values are stored as SQL NULL in SQLite (it cannot store NaN) and as
NaN in PostgreSQL; both read back as NaN (:func:`_nan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Dict, Iterator, List, Optional, Tuple

import orjson

#: (workload_uid, data_source, metric_name, rank, run_id): one series of points.
SeriesKey = Tuple[str, str, str, int, str]
KEY_COLS = "workload_uid, data_source, metric_name, rank, run_id"
#: The summary columns of a new series row, after KEY_COLS (rows go 0.. max_row, steps min_step.. max_step).
SERIES_SUMMARY_COLS = "count, min_row, max_row, first_ts, last_ts, has_rollup, min_step, max_step, step_is_row"
ROLLUP_COLS = ("n, nf, first_row, first_value, first_ts, last_row, last_value, last_ts, "
               "min_row, min_value, min_ts, max_row, max_value, max_ts, time_min, time_max")
#: Columns of a point row, in the order every backend writes them.
POINT_COLS = "series_id, row_index, step, value, timestamp"


@dataclass
class SeriesBatch:
    """One validated ``/wandb/metrics`` body: request-level fields and its points.

    ``series`` maps a metric name to ``{row: (value, timestamp_ms, step)}``;
    building it as dicts is what makes the last duplicate of a row win.
    ``rejected`` are the points refused one by one (``{"index", "field", "error",
    "message"}``, at most :data:`MAX_REJECTED_LISTED`), ``rejected_count`` all of
    them; ``exporter`` the exporter's health counters, when it sent them.
    Points of the body's ``rows`` land in ``series`` like any other.
    """

    workload_uid: str
    source: str
    run_id: str
    rank: int
    pod_name: str
    pod_uid: str
    namespace: str
    series: Dict[str, Dict[int, Tuple[float, float, float]]] = field(default_factory=dict)
    rejected: List[dict] = field(default_factory=list)
    rejected_count: int = 0
    exporter: Optional[Dict[str, int]] = None
    #: entries of the body's ``rows`` read (the answer's ``rows``: a client's proof that they were)
    rows: int = 0


#: Rejected points listed in an answer (``rejected_count`` counts all of them).
MAX_REJECTED_LISTED = 100


class StaleSummaries(Exception):
    """A series summary an ingest transaction started from is no longer the stored one
    (another process wrote the series since): the transaction is rolled back and retried
    from the database (``Ingest.ingest``)."""


@dataclass
class IngestResult:
    """What one ingest transaction stored."""

    count: int = 0
    inserted: int = 0
    detections: int = 0
    runs: int = 0


_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)


def point_rows(sid: int, pts: Dict[int, Tuple[float, float, float]]) -> Iterator[tuple]:
    """``(sid, row, step, value, ts)`` rows (:data:`POINT_COLS`) of one series'
    ``{row: (value, ts, step)}``, built by C-level iterators (no Python frame per row)."""
    vts = pts.values()
    return zip(repeat(sid), pts.keys(), map(_third, vts), map(_first, vts), map(_second, vts))


def _nan(v):
    """SQLite returns NULL for a stored NaN."""
    return math.nan if v is None else v


def _json(v) -> Optional[str]:
    return None if v is None else orjson.dumps(v).decode()


def _unjson(v):
    return None if v is None else orjson.loads(v)

