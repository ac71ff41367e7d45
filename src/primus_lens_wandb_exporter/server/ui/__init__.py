"""The Lens web UI, served by ``primus-lens serve`` at ``/``.

Everything here is static: an HTML shell, vanilla ES modules and a stylesheet from
``static/``, plus plotly's bundled JavaScript served straight from the installed
``plotly`` Python package (never copied into this repository).  The pages talk to
the query API under ``api/v1/`` with relative URLs, so the UI also works behind a
reverse proxy that mounts the server under a path prefix.

Routes added (none of them under ``/api`` or ``/health``):

- ``GET /``                              the single-page app (hash routing)
- ``GET /static/ui/{path}``              our JS/CSS
- ``GET /static/vendor/plotly.min.js``   plotly from the installed package

``PRIMUS_LENS_UI_PLOTLY_JS`` may name another plotly.js bundle installed from a
registry, e.g. npm's ``plotly.js-basic-dist-min`` (scatter/bar/pie only: 1.2 MB
instead of 4.8 MB, evaluated about 7x faster by the browser, which is most of a
cold page load).  The container image does that; see docs/ui.md.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from ..._version import __version__

STATIC_DIR = Path(__file__).resolve().parent / "static"
PLOTLY_ROUTE = "/static/vendor/plotly.min.js"
PLOTLY_ENV = "PRIMUS_LENS_UI_PLOTLY_JS"

log = logging.getLogger("primus_lens_wandb_exporter.server.ui")
UI_STATIC_ROUTE = "/static/ui"

__all__ = ["mount_ui", "plotly_js_path", "STATIC_DIR"]


def plotly_js_path() -> Optional[Path]:
    """Path of ``plotly.min.js`` inside the installed ``plotly`` package, or None.

    Found through the import system without importing plotly (its import is slow
    and the server never needs its Python side).
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "package_data" / "plotly.min.js"
        if candidate.is_file():
            return candidate
    return None


def chosen_plotly_js() -> Optional[Path]:
    """The bundle to serve: ``$PRIMUS_LENS_UI_PLOTLY_JS`` if it names a file, else plotly's own."""
    override = os.environ.get(PLOTLY_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if path.is_file():
            return path
        log.warning("%s=%s is not a file; serving the plotly package's bundle instead", PLOTLY_ENV, override)
    return plotly_js_path()


class _PlotlyBundle:
    """plotly.min.js read once, with a gzip copy (about 4.8 MB -> 1.4 MB on the wire)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._raw: Optional[bytes] = None
        self._gz: Optional[bytes] = None

    def raw(self) -> bytes:
        with self._lock:
            if self._raw is None:
                self._raw = self.path.read_bytes()
            return self._raw

    def gz(self) -> bytes:
        raw = self.raw()
        with self._lock:
            if self._gz is None:
                self._gz = gzip.compress(raw, compresslevel=6, mtime=0)
            return self._gz


@lru_cache(maxsize=4)
def _index_html(bundle_tag: str) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{VERSION}}", __version__).replace("{{PLOTLY_VERSION}}", bundle_tag)


class _RevalidatedStaticFiles(StaticFiles):
    """Our own JS/CSS: always revalidated (ETag -> 304), so an upgrade is seen at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_ui(app: Any, settings: Any = None) -> None:
    """Add the web UI routes to the FastAPI/Starlette ``app``.

    ``settings`` is accepted for symmetry with ``create_app``; the UI needs none of
    it (auth is enforced by the API, the page asks for a token on the first 401).
    Routes are exact paths or under ``/static/``, so ``/api/*`` and ``/health``
    are never shadowed, whatever order routes are registered in.
    """
    del settings
    plotly_path = chosen_plotly_js()
    bundle = _PlotlyBundle(plotly_path) if plotly_path else None
    # Cache-busting tag of the bundle's URL: changes whenever the served file does.
    stat = plotly_path.stat() if plotly_path else None
    bundle_tag = f"{stat.st_size:x}{int(stat.st_mtime):x}" if stat else "none"
    immutable = "public, max-age=31536000, immutable"

    async def index(request: Request) -> Response:
        return HTMLResponse(_index_html(bundle_tag), headers={"Cache-Control": "no-cache"})

    async def plotly_js(request: Request) -> Response:
        if bundle is None:
            return PlainTextResponse(
                "plotly is not installed: pip install 'primus-lens-wandb-exporter[server]'",
                status_code=404,
            )
        headers = {"Cache-Control": immutable, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = bundle.gz()
        else:
            body = bundle.raw()
        return Response(body, media_type="application/javascript", headers=headers)

    async def favicon(request: Request) -> Response:
        return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml")

    app.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/index.html", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    app.add_route(PLOTLY_ROUTE, plotly_js, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(UI_STATIC_ROUTE, _RevalidatedStaticFiles(directory=str(STATIC_DIR)), name="lens-ui-static")
