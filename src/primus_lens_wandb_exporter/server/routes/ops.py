"""The operator routes: ``/livez``, ``/readyz``, ``DELETE /api/v1/workloads/{uid}`` (see :mod:`..ops`)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from ..._version import __version__
from ..errors import ApiError, json_response

log = logging.getLogger("primus_lens.server")

router = APIRouter(tags=["operations"])


@router.get("/livez", summary="Liveness: the process serves requests (no database access)")
async def livez():
    # async and database-free: answered by the event loop even when every
    # threadpool thread waits on a database that is down.
    return json_response({"status": "ok", "version": __version__})


@router.get("/readyz", summary="Readiness: the database answers",
            responses={503: {"description": "Database unreachable"}})
def readyz(request: Request):
    store = request.app.state.runtime.store
    try:
        store.ping()
    except Exception as e:  # any database failure means "not ready", reported, not raised
        log.warning("readiness check failed: %s", e)
        return json_response({"status": "unavailable", "database": store.kind, "version": __version__,
                              "error": "database_unavailable",
                              "message": f"database unavailable: {e}"}, 503)
    return json_response({"status": "ok", "database": store.kind, "version": __version__})


@router.delete("/api/v1/workloads/{uid}", summary="Delete a workload and everything stored for it",
               responses={404: {"description": "Unknown workload"}})
def delete_workload(uid: str, request: Request):
    counts = request.app.state.runtime.store.delete_workload(uid)
    if counts is None:
        raise ApiError(404, "workload_not_found", f"workload {uid!r} not found: nothing was reported for it",
                       "workload_uid")
    log.info("deleted workload %s: %s", uid, counts)
    return json_response({"message": f"workload {uid!r} deleted", "workload_uid": uid, "deleted": counts})
