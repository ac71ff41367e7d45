"""The query routes: ``/health``, ``/api/v1``, workloads, the runs table, metric sources/names/data.

Plain functions, so FastAPI runs them in its threadpool (the store's reads block).
``metrics/data`` without ``max_points`` is streamed: see :mod:`.stream`.
"""

from __future__ import annotations

import logging
from typing import List, Literal, Optional

import orjson
from fastapi import APIRouter, Query, Request

from ... import limits
from ..._version import __version__
from ..errors import ApiError, json_response
from ..storage.runs import GROUPS, SORTS
from ..storage.runs_filter import FilterError, parse, parse_path
from .stream import data_items, encode_value, stream_data

log = logging.getLogger("primus_lens.server")

router = APIRouter(tags=["query"])

#: Longest comma-separated list a query parameter may hold (SQL placeholders are finite).
MAX_LIST = 1000
#: Workloads one runs/data request may name.
MAX_WORKLOADS = 100
_NOT_FOUND = {404: {"description": "Unknown workload"}}


def _metric_names(value: Optional[str]) -> Optional[List[str]]:
    """``metrics=``: a JSON array of exact names (what the UI sends: a name may hold "," or edge
    spaces), or a comma-separated list of trimmed names; None when absent."""
    names = None
    if value and value.startswith("["):
        try:
            names = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass  # a plain list whose first name starts with "["
        if not (type(names) is list and all(type(n) is str for n in names)):
            names = None
        elif not names:
            raise ApiError(400, "invalid_parameter", "metrics: [] names no metric (leave metrics out for all)",
                           "metrics")
        else:
            _no_nul("metrics", *names)  # a "\u0000" escape passed the check of the raw text
    names = _csv(value) if names is None else names
    if len(names) > MAX_LIST:
        raise ApiError(400, "invalid_parameter", f"metrics: at most {MAX_LIST} names per request", "metrics")
    return names or None


def _csv(value: Optional[str]) -> List[str]:
    return [p.strip() for p in value.split(",") if p.strip()] if value else []


def _ranks(value: Optional[str]) -> Optional[List[int]]:
    parts = _csv(value)
    if not parts:
        return None
    if len(parts) > MAX_LIST:
        raise ApiError(400, "invalid_parameter", f"rank: at most {MAX_LIST} ranks per request", "rank")
    out = []
    for p in parts:
        try:
            r = int(p)
        except ValueError:
            raise ApiError(400, "invalid_parameter", f"rank: {p!r} is not an integer (use rank=0 or rank=0,1)",
                           "rank") from None
        if not 0 <= r <= limits.MAX_RANK:
            raise ApiError(400, "invalid_parameter", f"rank: {r} is out of range", "rank")
        out.append(r)
    return out


def _no_nul(field: str, *values: Optional[str]) -> None:
    """400 for a NUL character: PostgreSQL text cannot hold one (the query would fail with a 500)
    and SQLite would cut the string at it; no stored name or value contains one."""
    for v in values:
        if v and "\x00" in v:
            raise ApiError(400, "invalid_parameter", f"{field}: contains a NUL character", field)


def _store(request: Request):
    return request.app.state.runtime.store


def _require(store, uid: str) -> None:
    _no_nul("workload_uid", uid)
    if not store.workload_exists(uid):
        raise ApiError(404, "workload_not_found", f"workload {uid!r} not found: nothing was reported for it",
                       "workload_uid")


@router.get("/health", summary="Liveness and database check")
def health(request: Request):
    rt = request.app.state.runtime
    store = rt.store
    try:
        store.ping()
    except Exception as e:  # any database failure is "down", reported, not raised
        log.warning("health check failed: %s", e)
        return json_response({"status": "error", "database": store.kind, "version": __version__,
                              "message": f"database unavailable: {e}"}, 503)
    body = {"status": "ok", "database": store.kind, "version": __version__, "storage": store.stats(),
            "exporters": store.exporter_totals()}
    if rt.shared is not None:  # serve --workers N: every process's counters, added up
        body["storage"], body["workers"] = rt.shared.snapshot()
    return json_response(body)


@router.get("/api/v1", summary="API index (also what Grafana's 'Save & test' probes)")
def api_index(request: Request):
    return json_response({"name": "Primus Lens telemetry API", "version": __version__,
                          "database": _store(request).kind, "docs": "/api/docs",
                          "endpoints": sorted({r.path for r in request.app.routes
                                               if getattr(r, "path", "").startswith("/api/v1/")})})


@router.get("/api/v1/workloads", summary="All workloads with detection and counts")
def workloads(request: Request, search: str = Query("", max_length=256),
              sort: Literal["last_update", "workload_uid", "points"] = "last_update",
              order: Literal["asc", "desc"] = "desc"):
    _no_nul("search", search)
    rows = _store(request).list_workloads(search, sort, order)
    return json_response({"workloads": rows, "total_count": len(rows)})


@router.get("/api/v1/runs", summary="The runs table: one row per workload, filtered, sorted, grouped in SQL")
def runs(request: Request,
         q: str = Query("", max_length=2000, description="filter, e.g. `config.lr>=0.001 tags:sweep "
                                                          "framework:lightning` (docs/protocol.md)"),
         sort: str = Query("updated", max_length=300, description="updated, workload, project, name, state, "
                                                                  "framework, step, started, group, entity, "
                                                                  "config.<key> or summary.<key>"),
         order: Literal["asc", "desc"] = "desc",
         limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0, le=10_000_000),
         group_by: Optional[str] = Query(None, max_length=300, description="project, name, state, group, "
                                                                           "entity, framework, config.<key> "
                                                                           "or summary.<key>"),
         columns: Optional[str] = Query(None, max_length=4000,
                                        description="comma-separated: config, summary (whole) or "
                                                    "config.<key>, summary.<key> (under `values`); "
                                                    "absent: whole config and summary")):
    for name, value in (("q", q), ("sort", sort), ("group_by", group_by), ("columns", columns)):
        _no_nul(name, value)
    try:
        terms = parse(q)
    except FilterError as e:
        raise ApiError(400, "invalid_filter", f"q: {e}", "q") from None
    cols = _csv(columns) if columns is not None else None
    checks = [("sort", sort, SORTS)] + ([("group_by", group_by, GROUPS)] if group_by else []) \
        + [("columns", c, {"config": 1, "summary": 1}) for c in cols or ()]
    if cols is not None and len(cols) > 100:
        raise ApiError(400, "invalid_parameter", "columns: at most 100 columns", "columns")
    for name, value, plain in checks:
        if value in plain:
            continue
        try:
            field, _ = parse_path(value, value)
        except FilterError as e:
            raise ApiError(400, "invalid_parameter", f"{name}: {e}", name) from None
        if field not in ("config", "summary"):
            raise ApiError(400, "invalid_parameter", f"{name}: {value!r} cannot be used here: use "
                                                     + ", ".join(sorted(plain)) + ", config.<key> or summary.<key>",
                           name)
    return json_response(_store(request).list_runs(terms, sort, order, limit, offset, group_by, cols))


@router.get("/api/v1/runs/keys", summary="The config and summary keys the runs table can show")
def run_keys(request: Request):
    return json_response(_store(request).run_keys())


@router.get("/api/v1/runs/data", summary="Downsampled points of several workloads at once, one column set per series")
def runs_data(request: Request,
              workloads: str = Query(..., max_length=20_000, description="comma-separated workload uids"),
              data_source: str = Query("wandb", max_length=limits.MAX_NAME_LEN),
              metrics: Optional[str] = Query(None, description="a JSON array or a comma list; all when absent"),
              rank: Optional[str] = Query(None, description="rank or comma-separated ranks"),
              max_points: int = Query(..., ge=4, le=100_000, description="per-series bound, as metrics/data"),
              x: Literal["step", "row", "time"] = "step"):
    """What Compare reads: ``metrics/data`` with ``max_points`` for each workload, in one
    answer, each series as columns (``step``, ``value``, ``timestamp``, ``row``) instead of
    one object per point: a fifth of the bytes, and no object built per point either side."""
    store = _store(request)
    _no_nul("workloads", workloads)
    _no_nul("metrics", metrics)
    _no_nul("data_source", data_source)
    uids = list(dict.fromkeys(_csv(workloads)))
    if not uids or len(uids) > MAX_WORKLOADS:
        raise ApiError(400, "invalid_parameter", f"workloads: 1 to {MAX_WORKLOADS} uids", "workloads")
    names = _metric_names(metrics)
    src = data_source or "wandb"
    ranks = _ranks(rank)
    series, missing, total = [], [], 0
    enc = encode_value
    for uid in uids:
        if not store.workload_exists(uid):
            missing.append(uid)
            continue
        cur, key = None, None
        for m, rk, run, st, v, ts, row in store.data(uid, src, names, None, None, ranks, None, max_points,
                                                     None, None, x):
            if (m, rk, run) != key:
                key = (m, rk, run)
                cur = {"workload_uid": uid, "metric_name": m, "rank": rk, "run_id": run,
                       "step": [], "value": [], "timestamp": [], "row": []}
                series.append(cur)
            cur["step"].append(int(st) if st.is_integer() else st)
            cur["value"].append(enc(v))
            cur["timestamp"].append(ts)
            cur["row"].append(row)
            total += 1
    return json_response({"data_source": src, "series": series, "total_count": total, "missing": missing})


@router.get("/api/v1/workloads/{uid}", summary="One workload: detection, runs, ranks, counts", responses=_NOT_FOUND)
def workload(uid: str, request: Request):
    store = _store(request)
    _no_nul("workload_uid", uid)
    w = store.get_workload(uid)
    if w is None:
        _require(store, uid)
    return json_response(w)


@router.get("/api/v1/workloads/{uid}/metrics/sources", summary="Data sources with point counts",
            responses=_NOT_FOUND)
def metrics_sources(uid: str, request: Request):
    store = _store(request)
    _require(store, uid)
    src = store.sources(uid)
    return json_response({"workload_uid": uid, "data_sources": [{"name": n, "count": c} for n, c in src],
                          "total_count": len(src)})


@router.get("/api/v1/workloads/{uid}/metrics/available", summary="Metric names with point counts",
            responses=_NOT_FOUND)
def metrics_available(uid: str, request: Request,
                      data_source: Optional[str] = Query(None, max_length=limits.MAX_NAME_LEN)):
    store = _store(request)
    _require(store, uid)
    _no_nul("data_source", data_source)
    rows = store.available(uid, data_source or None)
    return json_response({"workload_uid": uid,
                          "metrics": [{"name": n, "data_source": s, "count": c} for n, s, c in rows],
                          "total_count": len(rows)})


@router.get("/api/v1/workloads/{uid}/metrics/data", summary="Metric points, optionally downsampled",
            responses=_NOT_FOUND)
def metrics_data(uid: str, request: Request,
                 data_source: str = Query("wandb", max_length=limits.MAX_NAME_LEN),
                 metrics: Optional[str] = Query(None, description="a JSON array or a comma list; all when absent"),
                 start: Optional[float] = Query(None, ge=0, le=1e16, description="epoch ms, inclusive"),
                 end: Optional[float] = Query(None, ge=0, le=1e16, description="epoch ms, inclusive"),
                 rank: Optional[str] = Query(None, description="rank or comma-separated ranks"),
                 run_id: Optional[str] = Query(None, max_length=limits.MAX_UID_LEN),
                 max_points: Optional[int] = Query(None, ge=4, le=1_000_000,
                                                   description="per-series bound; keeps first, last, min, "
                                                               "max of each bucket of rows (history order) "
                                                               "and every non-finite point"),
                 after_step: Optional[float] = Query(None, ge=-limits.MAX_ABS_STEP, le=limits.MAX_ABS_STEP,
                                                     description="only points whose step is greater"),
                 after_row: Optional[int] = Query(None, ge=-1, le=limits.MAX_ROW,
                                                  description="only rows greater than this (live refresh)"),
                 x: Literal["step", "row", "time"] = Query("step", description="order within a series: "
                                                           "step (step, row), row, or time (timestamp, row)")):
    rt = request.app.state.runtime
    store = rt.store
    _require(store, uid)
    for name, value in (("metrics", metrics), ("data_source", data_source), ("run_id", run_id)):
        _no_nul(name, value)
    names = _metric_names(metrics)
    src = data_source or "wandb"
    ranks = _ranks(rank)
    if max_points is None:
        return stream_data(rt, uid, src, names, start, end, ranks, run_id, after_step, after_row, x)
    rows = store.data(uid, src, names, start, end, ranks, run_id, max_points, after_step, after_row, x)
    data = data_items(rows, src)
    return json_response({"workload_uid": uid, "data_source": src, "data": data, "total_count": len(data)})
