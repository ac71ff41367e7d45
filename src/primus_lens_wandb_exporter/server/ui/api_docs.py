"""``GET /api/docs``: the OpenAPI page (Swagger UI), self-hosted.

FastAPI's default docs page loads Swagger UI from a public CDN, so it is blank where
the server has no internet (most clusters).  Here the page is FastAPI's own
``get_swagger_ui_html`` with Swagger UI's script and stylesheet from the npm package
``swagger-ui-dist`` (pinned in ``package.json``, see :mod:`.npm`), served at
``/static/vendor/`` like uPlot.  All URLs in the page are relative to it, so it also
works behind a reverse proxy that mounts the server under a path prefix.  Without the
package the page says what to run; ``/api/openapi.json`` works either way.
"""

from __future__ import annotations

import html
import logging
import posixpath
from typing import Any

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..security import inline_script_csp
from .npm import VENDOR_ROUTE, NpmPackage, Vendored

DOCS_URL = "/api/docs"

SWAGGER_UI = NpmPackage(
    name="swagger-ui-dist",
    files={
        "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "application/javascript"),
        "swagger-ui.css": ("swagger-ui.css", "text/css"),
        "swagger-ui.LICENSE": ("LICENSE", "text/plain"),
        "swagger-ui.NOTICE": ("NOTICE", "text/plain"),
    },
    required=("swagger-ui-bundle.js", "swagger-ui.css"),
    what="Swagger UI, the /api/docs page's library",
)

# Swagger UI's default validatorUrl makes the page fetch a badge from validator.swagger.io.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}

log = logging.getLogger("primus_lens_wandb_exporter.server.ui")


def _relative(target: str, page: str) -> str:
    """``target`` (an absolute path of this app) relative to the page at ``page``."""
    return posixpath.relpath(target, posixpath.dirname(page))


def _missing_page(title: str, openapi_url: str, message: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(title)}</title></head>
<body style="font-family: sans-serif; max-width: 48em; margin: 2em auto; line-height: 1.5">
<h1>{html.escape(title)}</h1>
<p id="swagger-ui-missing"><strong>{html.escape(message)}.</strong></p>
<p>The OpenAPI spec itself is served: <a href="{html.escape(openapi_url)}">{html.escape(openapi_url)}</a>.</p>
</body>
</html>
"""


def mount_api_docs(app: Any, swagger: Vendored, favicon_url: str) -> None:
    """Add ``GET /api/docs`` to ``app`` (built with ``docs_url=None``), using ``swagger``'s files.

    ``favicon_url`` is an absolute path of this app; like every URL of the page it is
    made relative to ``/api/docs``.
    """
    title = f"{app.title} - Swagger UI"
    openapi_url = _relative(app.openapi_url, DOCS_URL)
    vendor = _relative(VENDOR_ROUTE, DOCS_URL)
    if swagger.available:
        page = get_swagger_ui_html(
            openapi_url=openapi_url, title=title,
            swagger_js_url=swagger.url("swagger-ui-bundle.js", vendor),
            swagger_css_url=swagger.url("swagger-ui.css", vendor),
            swagger_favicon_url=_relative(favicon_url, DOCS_URL),
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS).body
        status = 200
    else:
        log.warning("%s (looked in %s); /api/docs says so instead of showing the API",
                    swagger.package.missing_message, swagger.package.looked_in())
        page = _missing_page(title, openapi_url, swagger.package.missing_message).encode()
        status = 503

    # The page starts Swagger UI with one inline script: allowed by its hash, on this page only.
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": inline_script_csp(page)}

    async def docs(request: Request) -> Response:
        return HTMLResponse(page, status_code=status, headers=headers)

    app.add_route(DOCS_URL, docs, methods=["GET", "HEAD"], include_in_schema=False)
