"""MetricBatch: the points of one (data source, run, rank), ready for the wire.

The worker hands over its *entries* in log order: a ``Row`` per fast-path ``wandb.log``
(the user's dict of floats itself, with its row and time) and lists of ``Point`` structs
for everything else (msgspec, ``gc=False``).  A sink encodes a request body in C:
``row_form()`` gives the rows and points as the body's ``rows`` and ``metrics``
(docs/protocol.md, *Rows*: ~25 bytes and ~0.1 us a float point, where a ``Point`` each
is ~75 bytes and ~0.2 us, and building it ~0.1 us more); ``wire`` expands everything to
Points (an older server, the 413 split), and ``points`` (the wire dicts: the JSONL sink,
third-party sinks) is built from that on first use.
"""

import time
import uuid
from itertools import repeat
from operator import attrgetter
from typing import Any, Dict, Iterable, List, Optional

import msgspec

from ... import limits, wire
from ..identity import Identity


# The wire's own descriptions of a point and a row (the server decodes the same structs).
# A point's ``row`` is left out when it equals the integer step (most points), which keeps
# request bodies ~15 % smaller; constraints are checked by the server's decoder, not on construction.
Point = wire.Point
Row = wire.Row


_encode = msgspec.json.encode
_to_dicts = msgspec.to_builtins
_steps = attrgetter("step")
_rows = attrgetter("row")
_NUMBER_TYPES = frozenset({int, float})
_values = attrgetter("values")


def expand(entries) -> List[Point]:
    """The Points of a batch's entries, in order: a Row's in one ``map`` (C), no tuple or dict per point."""
    points = []
    extend = points.extend
    for entry in entries:
        if type(entry) is Row:
            values = entry.values
            extend(map(Point, values, values.values(), repeat(entry.step), repeat(entry.row),
                       repeat(entry.timestamp)))
        else:
            extend(entry)
    return points


class MetricBatch:
    """Points of one (data source, run, rank), ready for the wire (``encode``, ``to_payload``)."""

    __slots__ = ("source", "run_id", "rank", "local_rank", "node_rank", "world_size", "identity", "batch_id",
                 "created", "exporter", "_points", "_wire", "_entries", "_count", "_checked")

    def __init__(self, source: str, run_id: str, rank: int, local_rank: int, node_rank: int, world_size: int,
                 points: Optional[List[Dict[str, Any]]] = None, identity: Optional[Identity] = None,
                 batch_id: Optional[str] = None, created: Optional[float] = None,
                 exporter: Optional[Dict[str, int]] = None, wire: Optional[List[Point]] = None,
                 checked: bool = False, entries: Optional[list] = None, count: Optional[int] = None):
        self.source = source
        self.run_id = run_id
        self.rank = rank
        self.local_rank = local_rank
        self.node_rank = node_rank
        self.world_size = world_size
        self.identity = identity
        self.batch_id = batch_id or uuid.uuid4().hex
        self.created = time.time() if created is None else created
        #: The recorder's part of the SPEC's ``exporter`` counters (sinks add their own).
        self.exporter = {} if exporter is None else exporter
        self._points = points
        self._wire = wire
        # The worker's entries (Rows and lists of Points, in log order) and their point count.
        self._entries = entries
        self._count = count
        # The batcher knows every step and row is within Lens's limits (fast-path rows).
        self._checked = checked

    def __len__(self) -> int:
        if self._count is None:
            self._count = len(self.wire if self._points is None else self._points)
        return self._count

    def row_form(self):
        """``(rows, points)``: the fast-path rows as the body's ``rows`` and the other points as its
        ``metrics``, or None when there are no rows, or when a point would share an identity (name,
        row) with a row's: the server stores ``metrics`` before ``rows``, so the last-logged value
        must not be in ``metrics`` (only then does the split change what is stored)."""
        entries = self._entries
        if not entries:
            return None
        rows = [e for e in entries if type(e) is Row]
        if not rows:
            return None
        if len(rows) == len(entries):
            return rows, []
        points = [p for e in entries if type(e) is not Row for p in e]
        by_row = {r.step: r.values for r in rows}  # a fast-path row's step is its row
        for p in points:
            values = by_row.get(p.step if p.row is None else p.row)
            if values is not None and p.name in values:
                return None
        return rows, points

    @property
    def points(self) -> List[Dict[str, Any]]:
        """The wire dicts (``{"name", "value", "step", "timestamp"[, "row"]}``), built on first use."""
        if self._points is None:
            self._points = _to_dicts(self.wire)
        return self._points

    @property
    def wire(self) -> List[Point]:
        if self._wire is None:
            self._wire = expand(self._entries) if self._entries is not None else [Point(**p) for p in self._points]
        return self._wire

    def envelope(self) -> Dict[str, Any]:
        """The payload without ``metrics``, ``exporter`` and ``batch_id`` (same keys, same order)."""
        ident = self.identity
        return {"source": self.source, "workload_uid": ident.workload_uid, "pod_uid": ident.pod_uid,
                "pod_name": ident.pod_name, "namespace": ident.namespace, "run_id": self.run_id,
                "rank": self.rank, "local_rank": self.local_rank, "node_rank": self.node_rank,
                "world_size": self.world_size, "timestamp": self.created}

    def to_payload(self) -> Dict[str, Any]:
        payload = self.envelope()
        payload.update(batch_id=self.batch_id, metrics=self.points, exporter=dict(self.exporter))
        return payload

    def wire_payload(self, exporter: dict, start: int = 0, stop: Optional[int] = None,
                     batch_id: Optional[str] = None) -> Dict[str, Any]:
        """``to_payload()`` with the points ``[start:stop]`` as structs (what ``encode`` writes)."""
        payload = self.envelope()
        wire = self.wire
        payload.update(batch_id=batch_id or self.batch_id,
                       metrics=wire if start == 0 and stop is None else wire[start:stop], exporter=exporter)
        return payload

    def rows_payload(self, exporter: dict, rows: list, points: list, batch_id: Optional[str] = None) -> Dict[str, Any]:
        """The payload of ``rows`` and ``points`` (parts of ``row_form()``), as ``wire_payload``."""
        payload = self.envelope()
        payload.update(batch_id=batch_id or self.batch_id, metrics=points, rows=rows, exporter=exporter)
        return payload

    def encode(self, exporter: dict, start: int = 0, stop: Optional[int] = None,
               batch_id: Optional[str] = None) -> bytes:
        """One request body: the points ``[start:stop]`` (JSON, encoded in C)."""
        return _encode(self.wire_payload(exporter, start, stop, batch_id))

    def within_limits(self) -> bool:
        """Every step and row within what Lens accepts (the usual case, in C-level passes)."""
        if self._checked:
            return True
        wire = self.wire
        if not wire:
            return True
        try:
            steps = list(map(_steps, wire))
            if not set(map(type, steps)) <= _NUMBER_TYPES:
                return False
            total = sum(steps, 0.0)
            top = limits.MAX_ABS_STEP
            if total - total != 0 or min(steps) < -top or max(steps) > top:
                return False  # a NaN/±Inf makes the sum non-finite
            rows = [r for r in map(_rows, wire) if r is not None]
            if not rows:
                return True
            return set(map(type, rows)) <= {int} and min(rows) >= 0 and max(rows) <= limits.MAX_ROW
        except (TypeError, ValueError, OverflowError):
            return False

    def drop(self, indexes: Iterable[int]) -> "MetricBatch":
        """This batch without the points at ``indexes`` (those Lens would refuse)."""
        skip = set(indexes)
        kept = [p for i, p in enumerate(self.wire) if i not in skip]
        return MetricBatch(self.source, self.run_id, self.rank, self.local_rank, self.node_rank, self.world_size,
                           identity=self.identity, batch_id=self.batch_id, created=self.created,
                           exporter=self.exporter, wire=kept)
