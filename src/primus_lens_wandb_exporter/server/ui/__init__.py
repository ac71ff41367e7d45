"""The Lens web UI, served by ``primus-lens serve`` at ``/``.

Everything here is static: an HTML shell, vanilla ES modules and a stylesheet from
``static/``, plus the charting library uPlot (npm package ``uplot``, pinned in the
repository's ``package.json``/``package-lock.json`` and installed by ``npm ci``; never
copied into this repository).  The pages talk to the query API under ``api/v1/`` with
relative URLs, so the UI also works behind a reverse proxy that mounts the server
under a path prefix.

Routes added (none of them under ``/api`` or ``/health``):

- ``GET /``                                 the single-page app (hash routing)
- ``GET /static/ui/{path}``                 our JS/CSS
- ``GET /static/vendor/uPlot.iife.min.js``  uPlot's script, ``uPlot.min.css`` its
  stylesheet, ``uPlot.LICENSE`` its licence (MIT)

uPlot's files are looked up, in this order, in:

1. ``vendor/`` next to this module: a wheel built by ``hatch_build.py`` ships them there;
2. ``node_modules/uplot/dist`` of the source checkout this module lives in (editable
   installs, running from the repository after ``npm ci``).

If neither has them, ``/static/vendor/...`` answers 404 with what to run, and the page
shows the same in an error state instead of charts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from ..._version import __version__

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
# A source checkout: src/primus_lens_wandb_exporter/server/ui -> the repository root.
CHECKOUT_ROOT = HERE.parents[3]
VENDOR_DIRS: List[Path] = [HERE / "vendor", CHECKOUT_ROOT / "node_modules" / "uplot" / "dist"]
# URL name -> (file name in a vendor dir, media type); the LICENSE sits one level up in node_modules.
VENDOR_FILES: Dict[str, tuple] = {
    "uPlot.iife.min.js": ("uPlot.iife.min.js", "application/javascript"),
    "uPlot.min.css": ("uPlot.min.css", "text/css"),
    "uPlot.LICENSE": ("LICENSE", "text/plain"),
}
VENDOR_ROUTE = "/static/vendor"
MISSING_MESSAGE = ("uPlot, the UI's charting library, is not installed: run `npm ci` in the "
                   "repository checkout (needs Node.js/npm), or install a wheel built with npm "
                   "available; see README")
DEPRECATED_ENV = "PRIMUS_LENS_UI_PLOTLY_JS"

log = logging.getLogger("primus_lens_wandb_exporter.server.ui")
UI_STATIC_ROUTE = "/static/ui"

__all__ = ["mount_ui", "vendor_dir", "STATIC_DIR"]


def _vendor_file(directory: Path, name: str) -> Path:
    if name == "LICENSE" and not (directory / name).is_file():
        return directory.parent / name          # node_modules/uplot/LICENSE next to dist/
    return directory / name


def vendor_dir() -> Optional[Path]:
    """The first of ``VENDOR_DIRS`` holding uPlot's script and stylesheet, or None."""
    for directory in VENDOR_DIRS:
        if (directory / "uPlot.iife.min.js").is_file() and (directory / "uPlot.min.css").is_file():
            return directory
    return None


def uplot_version(directory: Path) -> Optional[str]:
    """uPlot's version from the package.json next to (or above) its files, if there is one."""
    for candidate in (directory / "package.json", directory.parent / "package.json"):
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("name") == "uplot":
            return str(data.get("version"))
    return None


class _VendorFile:
    """One of uPlot's files read once, with a gzip copy."""

    def __init__(self, path: Path, media_type: str) -> None:
        self.path = path
        self.media_type = media_type
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
    """Add the web UI routes to the FastAPI/Starlette ``app``.

    ``settings`` is accepted for symmetry with ``create_app``; the UI needs none of
    it (auth is enforced by the API, the page asks for a token on the first 401).
    Routes are exact paths or under ``/static/``, so ``/api/*`` and ``/health``
    are never shadowed, whatever order routes are registered in.
    """
    del settings
    if os.environ.get(DEPRECATED_ENV, "").strip():
        log.warning("%s is no longer used: the UI draws its charts with uPlot (npm package `uplot`), "
                    "not plotly; unset it", DEPRECATED_ENV)
    directory = vendor_dir()
    files: Dict[str, _VendorFile] = {}
    if directory is None:
        log.warning("%s (looked in %s); the UI shows an error instead of charts",
                    MISSING_MESSAGE, ", ".join(str(d) for d in VENDOR_DIRS))
        vendor_tag = "none"
    else:
        for url_name, (file_name, media_type) in VENDOR_FILES.items():
            path = _vendor_file(directory, file_name)
            if path.is_file():
                files[url_name] = _VendorFile(path, media_type)
        # Cache-busting tag of the vendor URLs: changes whenever the served files do.
        digest = hashlib.sha256()
        for name in ("uPlot.iife.min.js", "uPlot.min.css"):
            digest.update(files[name].raw())
        version = uplot_version(directory)
        vendor_tag = (f"{version}-" if version else "") + digest.hexdigest()[:12]
    immutable = "public, max-age=31536000, immutable"

    async def index(request: Request) -> Response:
        return HTMLResponse(_index_html(vendor_tag), headers={"Cache-Control": "no-cache"})

    async def vendor(request: Request) -> Response:
        name = request.path_params["name"]
        item = files.get(name)
        if item is None:
            if name in VENDOR_FILES:
                return PlainTextResponse(MISSING_MESSAGE + "\n", status_code=404)
            return PlainTextResponse(f"no such file: {name}\n", status_code=404)
        headers = {"Cache-Control": immutable, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = item.gz()
        else:
            body = item.raw()
        return Response(body, media_type=item.media_type, headers=headers)

    async def favicon(request: Request) -> Response:
        return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml")

    app.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/index.html", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    app.add_route(VENDOR_ROUTE + "/{name}", vendor, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(UI_STATIC_ROUTE, _RevalidatedStaticFiles(directory=str(STATIC_DIR)), name="lens-ui-static")
