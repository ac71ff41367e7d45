"""The Lens HTTP API: ingest and query endpoints of ``docs/protocol.md``.

Ingest bodies are read as bytes and handed to :mod:`.ingest` (a raw ASGI fast
path and group-committing writer threads; the event loop only moves bytes); the
OpenAPI schema still documents every body through ``openapi_extra``.
Query endpoints are plain functions, so FastAPI runs them in its threadpool.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, List, Literal, Optional

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import limits
from .._version import __version__
from . import auth, ingest, openapi, security
from .. import wire
from .ingest import RETRY_AFTER_S
from .errors import ApiError
from .settings import Settings
from .storage import Store, open_store

log = logging.getLogger("primus_lens.server")

#: Longest comma-separated list a query parameter may hold (SQL placeholders are finite).
MAX_LIST = 1000
#: metrics/data answers without max_points streamed at once per process; one more is
#: answered 503 with Retry-After (each holds a database connection while it streams).
MAX_STREAMS = 4
#: Bytes of ingest bodies held at once per process (read, queued or being processed;
#: a body without Content-Length counts as MAX_BODY_BYTES).  A request that would
#: exceed it is answered 503 + Retry-After before its body is read, so concurrent
#: large requests cannot grow memory without bound.
MAX_INGEST_INFLIGHT_BYTES = 256 * 1024 * 1024
#: Encoded chunks (~1 MiB each) buffered per streamed answer: its memory bound.
_STREAM_BUFFER = 4
_END = object()


class _ClientGone(Exception):
    """The client of a streamed answer disconnected: its read stops."""


def json_response(obj: Any, status: int = 200) -> Response:
    """An orjson-encoded response (FastAPI's default encoder is far slower)."""
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _encode_value(v: float):
    # JSON has no NaN/Infinity: they travel as the strings the protocol names.
    if v != v:
        return "NaN"
    if v == math.inf:
        return "Infinity"
    if v == -math.inf:
        return "-Infinity"
    return v


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


def busy(message: str) -> Response:
    """503 + Retry-After in the JSON error shape: admission refused, nothing was done."""
    return Response(ingest.busy_body(message), status_code=503, media_type="application/json",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def create_app(settings: Settings, store: Optional[Store] = None) -> "FastAPI":
    """Build the Lens API on ``settings.db_url`` (or an already opened ``store``)."""
    store = store or open_store(settings.db_url)
    shared = None
    if settings.stats_dir:
        from .shared_stats import SharedStats

        shared = SharedStats(settings.stats_dir, store.stats)
    from . import ops

    retention = ops.Retention(store, settings.retention_days) if settings.retention_days else None

    @asynccontextmanager
    async def lifespan(app):
        writer = app.state.ingest_writer
        if shared is not None:
            shared.start()
        if retention is not None:
            retention.start()
        yield
        # Every request uvicorn drained was answered, so its group is committed; this
        # only stops the writer threads (after anything still queued).
        writer.close()
        if retention is not None:
            retention.stop()
        # Runs after uvicorn drained in-flight requests on SIGTERM/SIGINT.
        if shared is not None:
            shared.stop()
        store.close()

    # /api/docs is added by mount_ui below: FastAPI's own page loads Swagger UI from a CDN.
    app = FastAPI(title="Primus Lens telemetry API", version=__version__, docs_url=None,
                  openapi_url="/api/openapi.json", redoc_url=None, lifespan=lifespan,
                  description="Ingest and query training metrics reported by primus-lens-wandb-exporter. "
                              "See docs/protocol.md.")
    app.state.store = store
    app.state.settings = settings
    max_body = settings.max_body_bytes

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return json_response(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        field = ".".join(loc) or "request"
        return json_response({"error": "invalid_parameter", "message": f"{field}: {first.get('msg', 'invalid')}",
                              "field": field}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response({"error": code, "message": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected_error(request, exc: Exception):
        # A bug, not a client error: logged with its traceback, answered in the
        # documented JSON error shape rather than Starlette's plain-text 500.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"error": "internal_error", "message": "internal server error (logged on the server)",
                              "field": None}, 500)

    # The ingest POSTs: parsed, validated and group-committed by writer threads
    # (see ingest.py); IngestFastPath answers them below the security middlewares,
    # the FastAPI routes of the same paths document them and share the handler.
    writer = ingest.IngestWriter(store, after_commit=shared.write if shared is not None else None)
    # The environment variable exists for tests and unusual deployments (documented in docs/server.md).
    ingest_path = ingest.IngestPath(writer, max_body, int(os.environ.get("PRIMUS_LENS_INGEST_INFLIGHT_BYTES")
                                                          or MAX_INGEST_INFLIGHT_BYTES))
    app.state.ingest_writer = writer

    async def admitted(request: Request) -> Response:
        out = await ingest_path.handle(request.url.path, request.headers.get("content-length"), request.stream())
        if out is None:  # the client is gone
            return Response(status_code=499)
        status, body, extra = out
        return Response(body, status_code=status, media_type="application/json",
                        headers={k.decode(): v.decode() for k, v in extra})

    ok = {"description": "Stored (committed to the database)"}
    err = {"description": "Invalid body: the message names the field"}
    responses = {200: ok, 400: err, 401: {"description": "Missing or wrong bearer token"},
                 413: {"description": "Body or point count over the limit"}}

    @app.post("/api/v1/wandb/metrics", tags=["ingest"], openapi_extra=openapi.body_doc(wire.MetricsRequest),
              responses=responses, summary="Report metric points (upsert on the point key)")
    async def post_metrics(request: Request):
        return await admitted(request)

    @app.post("/api/v1/wandb/detection", tags=["ingest"], openapi_extra=openapi.body_doc(wire.DetectionRequest),
              responses=responses, summary="Report a framework detection")
    async def post_detection(request: Request):
        return await admitted(request)

    @app.post("/api/v1/wandb/run", tags=["ingest"], openapi_extra=openapi.body_doc(wire.RunRequest),
              responses=responses, summary="Report a run lifecycle event (upsert per workload and run)")
    async def post_run(request: Request):
        return await admitted(request)

    @app.post("/api/v1/wandb/batch", tags=["ingest"], openapi_extra=openapi.body_doc(wire.BatchRequest),
              responses=responses, summary="Report detection, metrics and runs in one transaction")
    async def post_batch(request: Request):
        return await admitted(request)

    # -- query ------------------------------------------------------------------

    @app.get("/health", tags=["query"], summary="Liveness and database check")
    def health():
        try:
            store.ping()
        except Exception as e:  # any database failure is "down", reported, not raised
            log.warning("health check failed: %s", e)
            return json_response({"status": "error", "database": store.kind, "version": __version__,
                                  "message": f"database unavailable: {e}"}, 503)
        body = {"status": "ok", "database": store.kind, "version": __version__, "storage": store.stats(),
                "exporters": store.exporter_totals()}
        if shared is not None:  # serve --workers N: every process's counters, added up
            body["storage"], body["workers"] = shared.snapshot()
        return json_response(body)

    @app.get("/api/v1", tags=["query"], summary="API index (also what Grafana's 'Save & test' probes)")
    def api_index():
        return json_response({"name": "Primus Lens telemetry API", "version": __version__,
                              "database": store.kind, "docs": "/api/docs",
                              "endpoints": sorted({r.path for r in app.routes
                                                   if getattr(r, "path", "").startswith("/api/v1/")})})

    def _require(uid: str) -> None:
        if not store.workload_exists(uid):
            raise ApiError(404, "workload_not_found", f"workload {uid!r} not found: nothing was reported for it",
                           "workload_uid")

    @app.get("/api/v1/workloads", tags=["query"], summary="All workloads with detection and counts")
    def workloads(search: str = Query("", max_length=256),
                  sort: Literal["last_update", "workload_uid", "points"] = "last_update",
                  order: Literal["asc", "desc"] = "desc"):
        rows = store.list_workloads(search, sort, order)
        return json_response({"workloads": rows, "total_count": len(rows)})

    @app.get("/api/v1/workloads/{uid}", tags=["query"], summary="One workload: detection, runs, ranks, counts",
             responses={404: {"description": "Unknown workload"}})
    def workload(uid: str):
        w = store.get_workload(uid)
        if w is None:
            _require(uid)
        return json_response(w)

    @app.get("/api/v1/workloads/{uid}/metrics/sources", tags=["query"], summary="Data sources with point counts",
             responses={404: {"description": "Unknown workload"}})
    def metrics_sources(uid: str):
        _require(uid)
        src = store.sources(uid)
        return json_response({"workload_uid": uid, "data_sources": [{"name": n, "count": c} for n, c in src],
                              "total_count": len(src)})

    @app.get("/api/v1/workloads/{uid}/metrics/available", tags=["query"], summary="Metric names with point counts",
             responses={404: {"description": "Unknown workload"}})
    def metrics_available(uid: str, data_source: Optional[str] = Query(None, max_length=limits.MAX_NAME_LEN)):
        _require(uid)
        rows = store.available(uid, data_source or None)
        return json_response({"workload_uid": uid,
                              "metrics": [{"name": n, "data_source": s, "count": c} for n, s, c in rows],
                              "total_count": len(rows)})

    @app.get("/api/v1/workloads/{uid}/metrics/data", tags=["query"], summary="Metric points, optionally downsampled",
             responses={404: {"description": "Unknown workload"}})
    def metrics_data(uid: str,
                     data_source: str = Query("wandb", max_length=limits.MAX_NAME_LEN),
                     metrics: Optional[str] = Query(None, description="comma-separated names; all when absent"),
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
        _require(uid)
        names = _csv(metrics) or None
        if names and len(names) > MAX_LIST:
            raise ApiError(400, "invalid_parameter", f"metrics: at most {MAX_LIST} names per request", "metrics")
        src = data_source or "wandb"
        ranks = _ranks(rank)
        if max_points is None:
            return _stream_data(uid, src, names, start, end, ranks, run_id, after_step, after_row, x)
        rows = store.data(uid, src, names, start, end, ranks, run_id, max_points, after_step, after_row, x)
        data = _data_items(rows, src)
        return json_response({"workload_uid": uid, "data_source": src, "data": data, "total_count": len(data)})

    def _data_items(rows, src):
        enc = _encode_value
        # iteration is the chart step: an int when integral (what old clients expect), else a float.
        return [{"metric_name": m, "value": enc(v), "timestamp": ts, "iteration": int(st) if st.is_integer() else st,
                 "row": row, "data_source": src, "rank": rk, "run_id": run} for m, rk, run, st, v, ts, row in rows]

    # Streamed answers: the database read and the encoding run in one of MAX_STREAMS
    # threads (a cursor stays on its thread), handing ~1 MiB chunks through a bounded
    # queue, so an answer of any size costs the server a constant amount of memory.
    stream_slots = threading.BoundedSemaphore(MAX_STREAMS)
    stream_pool = ThreadPoolExecutor(MAX_STREAMS, thread_name_prefix="lens-stream")

    def _stream_data(uid, src, names, start, end, ranks, run_id, after_step, after_row, x):
        if not stream_slots.acquire(blocking=False):
            return busy(f"{MAX_STREAMS} unbounded metrics/data answers are streaming already; retry later "
                        "or pass max_points")
        chunks: "queue.Queue" = queue.Queue(_STREAM_BUFFER)
        stop = threading.Event()

        def put(item) -> None:
            while not stop.is_set():
                try:
                    chunks.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue
            raise _ClientGone

        def produce():
            n = 0
            rows_iter = store.stream_data(uid, src, names, start, end, ranks, run_id, after_step, after_row, x)
            try:
                for rows in rows_iter:
                    part = orjson.dumps(_data_items(rows, src))[1:-1]
                    put(part if n == 0 else b"," + part)
                    n += len(rows)
                put(b'],"total_count":' + str(n).encode() + b"}")
                put(_END)
            except _ClientGone:
                pass
            except Exception as e:  # the answer is cut short (invalid JSON), never silently partial
                log.error("streaming metrics/data of %r failed after %d points", uid, n, exc_info=e)
                try:
                    put(e)
                except _ClientGone:
                    pass
            finally:
                rows_iter.close()  # ends the read transaction on this thread
                stream_slots.release()

        try:
            stream_pool.submit(produce)
        except Exception:
            stream_slots.release()
            raise

        async def body():
            try:
                yield (b'{"workload_uid":' + orjson.dumps(uid) + b',"data_source":' + orjson.dumps(src)
                       + b',"data":[')
                while True:
                    item = await run_in_threadpool(chunks.get)
                    if item is _END:
                        return
                    if isinstance(item, Exception):
                        raise RuntimeError("metrics/data stream failed") from item
                    yield item
            finally:
                stop.set()

        return StreamingResponse(body(), media_type="application/json")

    ops.add_routes(app, store, json_response)
    openapi.install(app)

    try:
        from .ui import mount_ui
    except ImportError:
        mount_ui = None
    if mount_ui is not None:
        mount_ui(app, settings)

    # Innermost first: the ingest fast path sits behind every check below; the guard's
    # refusals are access-logged; the headers go on every answer.
    app.add_middleware(ingest.IngestFastPath, ingest=ingest_path,
                       routes={r.path: r for r in app.routes if getattr(r, "path", None) in ingest.PATHS})
    app.add_middleware(security.BrowserGuard, hosts=security.allowed_hosts(settings.allowed_hosts, settings.host))
    app.add_middleware(auth.AccessAndAuth, tokens=auth.Tokens.from_settings(settings))
    app.add_middleware(security.SecurityHeaders)
    try:
        from . import metrics as prometheus
    except ImportError:  # prometheus_client missing (an old install of the server extra)
        log.warning("/metrics disabled: pip install prometheus_client")
    else:
        prometheus.install(app, store, shared)  # outermost: requests refused by auth are counted too
    return app
