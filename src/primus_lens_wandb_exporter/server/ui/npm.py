"""Browser packages from npm, served by the Lens server under ``/static/vendor/``.

No third-party browser code is committed: each package is pinned exactly in the
repository's ``package.json``/``package-lock.json`` and installed by ``npm ci`` into
``node_modules/``.  The files of package ``<name>`` are looked up, per package, in the
first of ``VENDOR_ROOTS`` that holds all its required files, at the same relative
paths in both:

1. ``vendor/<name>/`` next to this module: a wheel built by ``hatch_build.py`` ships
   them there (its ``NPM_FILES`` must list the same paths as the packages here);
2. ``node_modules/<name>/`` of the source checkout this module lives in (editable
   installs, running from the repository after ``npm ci``).

Every file is served at ``/static/vendor/<url name>``, read once, gzip-compressed once
when the browser accepts it, and cached for a year (``immutable``): pages reference it
with ``?v=<package version>-<content hash>``, which changes whenever the files do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

HERE = Path(__file__).resolve().parent
# A source checkout: src/primus_lens_wandb_exporter/server/ui -> the repository root.
CHECKOUT_ROOT = HERE.parents[3]
VENDOR_ROOTS: List[Path] = [HERE / "vendor", CHECKOUT_ROOT / "node_modules"]
VENDOR_ROUTE = "/static/vendor"
IMMUTABLE = "public, max-age=31536000, immutable"
_COMPRESSIBLE = ("application/javascript", "text/")

__all__ = ["NpmPackage", "Vendored", "VENDOR_ROOTS", "VENDOR_ROUTE", "mount_vendor"]


@dataclass(frozen=True)
class NpmPackage:
    """A browser package from npm and the files of it that the server serves."""

    name: str                                   # npm package name: node_modules/<name>
    files: Mapping[str, Tuple[str, str]]        # URL name -> (path inside the package, media type)
    required: Tuple[str, ...]                   # URL names without which the package is "missing"
    what: str                                   # what it is to the server, for missing_message

    @property
    def missing_message(self) -> str:
        """What to do when the package is missing (logged, and shown by pages)."""
        return (f"{self.what} is not installed: run `npm ci` in the repository checkout (needs "
                "Node.js/npm), or install a wheel built with npm available; see README")

    def root(self) -> Optional[Path]:
        """The first ``VENDOR_ROOTS/<name>`` holding every required file, or None."""
        for base in VENDOR_ROOTS:
            root = base / self.name
            if all((root / self.files[url][0]).is_file() for url in self.required):
                return root
        return None

    def looked_in(self) -> str:
        return ", ".join(str(base / self.name) for base in VENDOR_ROOTS)


def package_version(root: Path, name: str) -> Optional[str]:
    """The version in ``root/package.json`` when it is ``name``'s, else None."""
    try:
        data = json.loads((root / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(data.get("version")) if isinstance(data, dict) and data.get("name") == name else None


class _VendorFile:
    """One served file, read once, with a gzip copy made on first demand."""

    def __init__(self, path: Path, media_type: str) -> None:
        self.path = path
        self.media_type = media_type
        self.compressible = media_type.startswith(_COMPRESSIBLE)
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


class Vendored:
    """A package as found when the app is built: its files, or why there are none."""

    def __init__(self, package: NpmPackage) -> None:
        self.package = package
        self.root = package.root()
        self.files: Dict[str, _VendorFile] = {}
        if self.root is None:
            self.tag = "none"
            return
        for url_name, (path, media_type) in package.files.items():
            if (self.root / path).is_file():
                self.files[url_name] = _VendorFile(self.root / path, media_type)
        # Cache-busting tag of the URLs: changes whenever the served files do.
        digest = hashlib.sha256()
        for url_name in package.required:
            digest.update(self.files[url_name].raw())
        version = package_version(self.root, package.name)
        self.tag = (f"{version}-" if version else "") + digest.hexdigest()[:12]

    @property
    def available(self) -> bool:
        return self.root is not None

    def url(self, url_name: str, prefix: str = "static/vendor") -> str:
        """``prefix/<url name>?v=<tag>``; ``prefix`` makes it relative to the page using it."""
        assert url_name in self.package.files, url_name
        return f"{prefix}/{url_name}?v={self.tag}"


def mount_vendor(app: Any, vendored: Iterable[Vendored]) -> None:
    """``GET /static/vendor/{name}``: the files of every package in ``vendored``."""
    files: Dict[str, _VendorFile] = {}
    missing: Dict[str, str] = {}               # URL name -> what to run, for absent packages
    for item in vendored:
        for url_name in item.package.files:
            if url_name in files or url_name in missing:
                raise ValueError(f"two npm packages serve {VENDOR_ROUTE}/{url_name}")
            if url_name in item.files:
                files[url_name] = item.files[url_name]
            else:
                missing[url_name] = item.package.missing_message

    async def vendor(request: Request) -> Response:
        name = request.path_params["name"]
        item = files.get(name)
        if item is None:
            if name in missing:
                return PlainTextResponse(missing[name] + "\n", status_code=404)
            return PlainTextResponse(f"no such file: {name}\n", status_code=404)
        headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
        if item.compressible and "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = item.gz()
        else:
            body = item.raw()
        return Response(body, media_type=item.media_type, headers=headers)

    app.add_route(VENDOR_ROUTE + "/{name}", vendor, methods=["GET", "HEAD"], include_in_schema=False)
