"""The Lens HTTP API (``docs/protocol.md``): :func:`create_app` wires it, and only that.

What goes where: the routes in :mod:`.routes` (ingest, query, ops), the state they
share in one :class:`.runtime.Runtime` on ``app.state.runtime``, the error handlers in
:mod:`.errors`, the request bodies' OpenAPI schemas in :mod:`.openapi` (from
:mod:`..wire`), and the one ASGI layer every request passes in :mod:`.middleware`
(checks from :mod:`.security` and :mod:`.auth`, counts for :mod:`.metrics`, the
ingest POSTs of :mod:`.ingest`).
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI

from .._version import __version__
from . import auth, ingest, middleware, openapi, routes, security
from .errors import install_error_handlers
from .runtime import Runtime
from .settings import Settings
from .storage import Store, open_store

log = logging.getLogger("primus_lens.server")


def _telemetry() -> Optional[dict]:
    """FastAPI's own OpenTelemetry, off unless the process is set up for OpenTelemetry.

    FastAPI asks on every request whether a tracer, meter or logger provider is
    configured (environment lookups: ~10 us of the ~25 us the outer layers cost a
    small ingest request).  Lens configures none; a deployment that does
    (``opentelemetry-instrument``, ``OTEL_*`` variables, ``FASTAPI_OTEL_AUTO_CONFIGURE``)
    keeps FastAPI's default, which instruments requests as before.
    """
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE") or any(k.startswith("OTEL_") for k in os.environ):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings, store: Optional[Store] = None) -> "FastAPI":
    """Build the Lens API on ``settings.db_url`` (or an already opened ``store``)."""
    store = store or open_store(settings.db_url)
    runtime = Runtime(settings, store)

    @asynccontextmanager
    async def lifespan(app):
        runtime.start()
        yield
        runtime.stop()

    # /api/docs is added by mount_ui below: FastAPI's own page loads Swagger UI from a CDN.
    app = FastAPI(title="Primus Lens telemetry API", version=__version__, docs_url=None,
                  openapi_url="/api/openapi.json", redoc_url=None, lifespan=lifespan, telemetry=_telemetry(),
                  description="Ingest and query training metrics reported by primus-lens-wandb-exporter. "
                              "See docs/protocol.md.")
    app.state.runtime = runtime
    app.state.store = store
    app.state.settings = settings
    install_error_handlers(app)
    for router in routes.ROUTERS:
        # The routes themselves, not FastAPI's lazily-resolved include: the ingest fast
        # path, /metrics' route labels and /api/v1's index read app.routes.
        app.router.routes.extend(router.routes)
    openapi.install(app)

    try:
        from .ui import mount_ui
    except ImportError:
        mount_ui = None
    if mount_ui is not None:
        mount_ui(app, settings)

    try:
        from . import metrics as prometheus
    except ImportError:  # prometheus_client missing (an old install of the server extra)
        log.warning("/metrics disabled: pip install prometheus_client")
        counters = None
    else:
        counters = prometheus.install(app, store, runtime.shared)
    # One ASGI layer for every request: /metrics counts, security headers, access line,
    # token roles, browser guard, and the ingest POSTs answered without FastAPI.
    app.add_middleware(middleware.Edge, guard=security.BrowserGuard(security.allowed_hosts(settings.allowed_hosts,
                                                                                          settings.host)),
                       tokens=auth.Tokens.from_settings(settings), ingest_path=runtime.ingest,
                       routes={r.path: r for r in app.routes if getattr(r, "path", None) in ingest.PATHS},
                       metrics=counters)
    return app
