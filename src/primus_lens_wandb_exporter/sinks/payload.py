"""Metrics request payloads with ``rows`` (docs/protocol.md, *Rows*): count, cut and convert them.

A live payload holds ``wire.Row``/``wire.Point`` structs (``MetricBatch.rows_payload``); one
read back from the spool holds the same as dicts.  Each function here takes both.  The
server stores a body's ``metrics`` before its ``rows``, so a cut keeps that order: the
points, then the rows, in their order.
"""

from typing import Any, Dict, List, Tuple

import msgspec

from ..wire import Row

_to_dicts = msgspec.to_builtins


def _row_parts(row) -> Tuple[Any, Any, Any, dict]:
    """``(step, row, timestamp, values)`` of a Row struct or a row dict."""
    if type(row) is Row:
        return row.step, row.row, row.timestamp, row.values
    if isinstance(row, dict):
        values = row.get("values")
        return row.get("step"), row.get("row"), row.get("timestamp"), values if isinstance(values, dict) else {}
    return None, None, None, {}


def _with_values(row, values: dict):
    if type(row) is Row:
        return msgspec.structs.replace(row, values=values)
    return dict(row, values=values)


def has_rows(payload) -> bool:
    return isinstance(payload, dict) and bool(payload.get("rows"))


def points_of(payload: dict) -> int:
    """The points of a metrics payload: its ``metrics`` and its rows' values."""
    return len(payload.get("metrics") or ()) + sum(len(_row_parts(r)[3]) for r in payload.get("rows") or ())


def chunks(points, size):
    """``points`` in lists of at most ``size``."""
    if len(points) <= size:
        return [points]
    return [points[i:i + size] for i in range(0, len(points), size)]


def row_chunks(rows: list, points: list, size: int) -> List[Tuple[list, list, int]]:
    """``(rows, points, count)`` parts of at most ``size`` points each, in the server's order
    (points first); a row of more than ``size`` values is cut into rows of the same step."""
    out: List[Tuple[list, list, int]] = []
    cur_rows: list = []
    cur_points: list = []
    n = 0

    def close():
        nonlocal cur_rows, cur_points, n
        if n:
            out.append((cur_rows, cur_points, n))
        cur_rows, cur_points, n = [], [], 0

    for start in range(0, len(points), size):
        close()
        cur_points = points[start:start + size]
        n = len(cur_points)
    for row in rows:
        values = _row_parts(row)[3]
        k = len(values)
        if n + k > size:
            close()
        if k <= size:
            cur_rows.append(row)
            n += k
            continue
        items = list(values.items())
        for start in range(0, k, size):
            part = items[start:start + size]
            close()
            cur_rows.append(_with_values(row, dict(part)))
            n = len(part)
    close()
    return out


def halves(payload: dict) -> List[Tuple[Dict[str, Any], int]]:
    """A metrics payload of more than one point cut in parts of at most half its points (two, or
    three when a row straddles the middle): ``(payload, points)`` each, order kept."""
    metrics = list(payload.get("metrics") or ())
    rows = list(payload.get("rows") or ())
    total = points_of(payload)
    if total < 2:
        return [(payload, total)]
    out = []
    for part_rows, part_points, count in row_chunks(rows, metrics, (total + 1) // 2):
        part = dict(payload, metrics=part_points)
        if part_rows:
            part["rows"] = part_rows
        else:
            part.pop("rows", None)
        out.append((part, count))
    return out


def as_points(payload: dict) -> Dict[str, Any]:
    """The payload with its rows as ``metrics`` points (what a server without the row form reads)."""
    metrics = _to_dicts(list(payload.get("metrics") or ()))
    for r in payload.get("rows") or ():
        step, row, ts, values = _row_parts(r)
        for name, value in values.items():
            point = {"name": name, "value": value}
            if step is not None:
                point["step"] = step
            if row is not None:
                point["row"] = row
            if ts is not None:
                point["timestamp"] = ts
            metrics.append(point)
    out = dict(payload, metrics=metrics)
    out.pop("rows", None)
    return out
