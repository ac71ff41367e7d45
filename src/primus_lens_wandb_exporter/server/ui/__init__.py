"""The Lens web UI, served by ``primus-lens serve`` at ``/``, and the OpenAPI page.

Everything here is static: an HTML shell, vanilla ES modules and a stylesheet from
``static/``, plus browser packages from npm (pinned in the repository's
``package.json``/``package-lock.json``, installed by ``npm ci``; never copied into this
repository, see :mod:`.npm`): the charting library uPlot (``uplot``) and Swagger UI
(``swagger-ui-dist``) for ``/api/docs`` (:mod:`.api_docs`).  The pages use relative
URLs, so they also work behind a reverse proxy that mounts the server under a path
prefix.

Routes added (none of them under ``/api/v1`` or at ``/health``):

- ``GET /``                                 the single-page app (hash routing)
- ``GET /static/ui/{path}``                 our JS/CSS
- ``GET /static/vendor/uPlot.iife.min.js``  uPlot's script, ``uPlot.min.css`` its
  stylesheet, ``uPlot.LICENSE`` its licence (MIT)
- ``GET /static/vendor/swagger-ui-bundle.js``, ``swagger-ui.css``, ``swagger-ui.LICENSE``,
  ``swagger-ui.NOTICE``: Swagger UI (Apache-2.0)
- ``GET /api/docs``                         the OpenAPI page, built on those

The npm files are looked up in a wheel's ``vendor/<package>/`` first, then in the
checkout's ``node_modules/<package>/`` (see :mod:`.npm`).  If uPlot is in neither,
``/static/vendor/...`` answers 404 with what to run, and the page shows the same in an
error state instead of charts; without Swagger UI ``/api/docs`` says what to run.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from ..._version import __version__
from . import npm
from .api_docs import SWAGGER_UI, mount_api_docs
from .npm import NpmPackage, Vendored

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
UPLOT = NpmPackage(
    name="uplot",
    files={
        "uPlot.iife.min.js": ("dist/uPlot.iife.min.js", "application/javascript"),
        "uPlot.min.css": ("dist/uPlot.min.css", "text/css"),
        "uPlot.LICENSE": ("LICENSE", "text/plain"),
    },
    required=("uPlot.iife.min.js", "uPlot.min.css"),
    what="uPlot, the UI's charting library",
)
#: Every npm package the server serves (hatch_build.py's NPM_FILES ships the same files in wheels).
NPM_PACKAGES = (UPLOT, SWAGGER_UI)
DEPRECATED_ENV = "PRIMUS_LENS_UI_PLOTLY_JS"

log = logging.getLogger("primus_lens_wandb_exporter.server.ui")
UI_STATIC_ROUTE = "/static/ui"

__all__ = ["mount_ui", "vendor_dir", "STATIC_DIR", "NPM_PACKAGES"]


def vendor_dir() -> Optional[Path]:
    """The folder of the uPlot package the server would serve (wheel or node_modules), or None."""
    return UPLOT.root()


@lru_cache(maxsize=4)
def _index_html(vendor_tag: str) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{VERSION}}", __version__).replace("{{UPLOT_VERSION}}", vendor_tag)


class _RevalidatedStaticFiles(StaticFiles):
    """Our own JS/CSS: always revalidated (ETag -> 304), so an upgrade is seen at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_ui(app: Any, settings: Any = None) -> None:
    """Add the web UI routes, the npm files and the ``/api/docs`` page to the FastAPI ``app``.

    ``settings`` is accepted for symmetry with ``create_app``; the UI needs none of
    it (auth is enforced by the API, the page asks for a token on the first 401).
    Routes are exact paths (``/api/docs`` the only one under ``/api``; ``app`` is built
    with ``docs_url=None``) or under ``/static/``, so ``/api/v1/*`` and ``/health``
    are never shadowed, whatever order routes are registered in.
    """
    del settings
    if os.environ.get(DEPRECATED_ENV, "").strip():
        log.warning("%s is no longer used: the UI draws its charts with uPlot (npm package `uplot`), "
                    "not plotly; unset it", DEPRECATED_ENV)
    vendored = {package.name: Vendored(package) for package in NPM_PACKAGES}   # files read once, here
    uplot, swagger = vendored[UPLOT.name], vendored[SWAGGER_UI.name]
    if not uplot.available:
        log.warning("%s (looked in %s); the UI shows an error instead of charts",
                    UPLOT.missing_message, UPLOT.looked_in())
    vendor_tag = uplot.tag

    async def index(request: Request) -> Response:
        return HTMLResponse(_index_html(vendor_tag), headers={"Cache-Control": "no-cache"})

    async def favicon(request: Request) -> Response:
        return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml")

    app.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/index.html", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    npm.mount_vendor(app, vendored.values())
    mount_api_docs(app, swagger, favicon_url=f"{UI_STATIC_ROUTE}/favicon.svg")
    app.mount(UI_STATIC_ROUTE, _RevalidatedStaticFiles(directory=str(STATIC_DIR)), name="lens-ui-static")
