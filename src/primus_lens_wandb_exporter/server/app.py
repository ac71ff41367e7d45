"""The Lens HTTP API (``docs/protocol.md``): :func:`create_app` wires it, and only that.

What goes where: the routes in :mod:`.routes` (ingest, query, ops), the state they
share in one :class:`.runtime.Runtime` on ``app.state.runtime``, the error handlers in
:mod:`.errors`, the request bodies' OpenAPI schemas in :mod:`.openapi` (from
:mod:`..wire`), and the ASGI layers every request passes in :mod:`.ingest`
(the ingest fast path), :mod:`.security`, :mod:`.auth` and :mod:`.metrics`.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI

from .._version import __version__
from . import auth, ingest, openapi, routes, security
from .errors import install_error_handlers
from .runtime import Runtime
from .settings import Settings
from .storage import Store, open_store

log = logging.getLogger("primus_lens.server")


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
                  openapi_url="/api/openapi.json", redoc_url=None, lifespan=lifespan,
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

    # Innermost first: the ingest fast path sits behind every check below; the guard's
    # refusals are access-logged; the headers go on every answer.
    app.add_middleware(ingest.IngestFastPath, ingest=runtime.ingest,
                       routes={r.path: r for r in app.routes if getattr(r, "path", None) in ingest.PATHS})
    app.add_middleware(security.BrowserGuard, hosts=security.allowed_hosts(settings.allowed_hosts, settings.host))
    app.add_middleware(auth.AccessAndAuth, tokens=auth.Tokens.from_settings(settings))
    app.add_middleware(security.SecurityHeaders)
    try:
        from . import metrics as prometheus
    except ImportError:  # prometheus_client missing (an old install of the server extra)
        log.warning("/metrics disabled: pip install prometheus_client")
    else:
        prometheus.install(app, store, runtime.shared)  # outermost: requests refused by auth are counted too
    return app
