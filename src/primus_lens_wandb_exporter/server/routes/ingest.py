"""``POST /api/v1/wandb/{metrics,detection,run,batch}``: the FastAPI entry of the ingest path.

A request normally never gets here: :class:`..middleware.Edge` answers these POSTs
after its checks.  These routes stay for the OpenAPI document
(their bodies are the wire Structs, :mod:`..openapi`) and for an app mounted without
that layer; both call the same :meth:`..ingest.IngestPath.handle`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ... import wire
from ..openapi import body_doc

router = APIRouter(tags=["ingest"])

_RESPONSES = {200: {"description": "Stored (committed to the database)"},
              400: {"description": "Invalid body: the message names the field"},
              401: {"description": "Missing or wrong bearer token"},
              413: {"description": "Body or point count over the limit"}}


async def _admitted(request: Request) -> Response:
    out = await request.app.state.runtime.ingest.handle(request.url.path, request.headers.get("content-length"),
                                                        request.stream())
    if out is None:  # the client is gone
        return Response(status_code=499)
    status, body, extra = out
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in extra})


@router.post("/api/v1/wandb/metrics", openapi_extra=body_doc(wire.MetricsRequest), responses=_RESPONSES,
             summary="Report metric points (upsert on the point key)")
async def post_metrics(request: Request):
    return await _admitted(request)


@router.post("/api/v1/wandb/detection", openapi_extra=body_doc(wire.DetectionRequest), responses=_RESPONSES,
             summary="Report a framework detection")
async def post_detection(request: Request):
    return await _admitted(request)


@router.post("/api/v1/wandb/run", openapi_extra=body_doc(wire.RunRequest), responses=_RESPONSES,
             summary="Report a run lifecycle event (upsert per workload and run)")
async def post_run(request: Request):
    return await _admitted(request)


@router.post("/api/v1/wandb/batch", openapi_extra=body_doc(wire.BatchRequest), responses=_RESPONSES,
             summary="Report detection, metrics and runs in one transaction")
async def post_batch(request: Request):
    return await _admitted(request)
