"""Hatch build hook: what a wheel needs beyond the package's own files.

1. The start-up line, for wheel and editable installs.  pip installs every ``*.pth`` at
   the root of a wheel into site-packages, and the interpreter executes its ``import``
   line at start-up.  That is what makes ``pip install primus-lens-wandb-exporter``
   enough to mirror wandb calls.

2. The browser packages from npm (pinned in ``package.json``/``package-lock.json``): the
   web UI's charting library uPlot (``uplot``) and Swagger UI (``swagger-ui-dist``, for
   ``/api/docs``).  The files of ``NPM_FILES`` (scripts, stylesheets, licences and
   package.json) are looked up in ``node_modules/<package>/<path>`` (``npm ci`` is run first
   when they are missing and npm is available).  Without npm, each package's tarball is
   downloaded from the npm registry (``$npm_config_registry``, default registry.npmjs.org)
   at the exact version of ``package-lock.json`` and checked against its ``integrity``
   hash -- so a wheel, an sdist or ``pip install git+...`` built on a machine without
   Node.js still ships a working UI.  A wheel carries them in
   ``primus_lens_wandb_exporter/server/ui/vendor/<package>/<path>``, the layout
   ``server/ui/npm.py`` looks for; an editable install serves ``node_modules/`` of the
   checkout, or, with no npm, the same downloaded files written into that (git-ignored)
   ``vendor/`` directory of the source tree.  Only when neither npm nor the registry can
   be reached is the package built without them; it says so, and its server shows what to
   run instead of charts.
"""

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_SOURCE = "src/primus_lens_wandb_exporter.pth"
# Hatchling's own editable .pth is "_primus_lens_wandb_exporter.pth"; ours sorts after it,
# so the source directory is already on sys.path when our line runs.
PTH_TARGET = "primus_lens_wandb_exporter.pth"

NPM_FILES = {  # npm package -> its files (paths under node_modules/<package>) that wheels ship
    "uplot": ("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE", "package.json"),
    "swagger-ui-dist": ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE", "package.json"),
}
VENDOR_TARGET = "primus_lens_wandb_exporter/server/ui/vendor"


def _note(message):
    print(f"primus-lens build: {message}", file=sys.stderr)


def _lock_entry(root, package):
    """``package-lock.json``'s entry of ``package``: version, integrity, resolved (maybe absent)."""
    with open(os.path.join(root, "package-lock.json"), encoding="utf-8") as f:
        return json.load(f)["packages"][f"node_modules/{package}"]


def _registry_tarball(package, entry):
    registry = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") \
        or "https://registry.npmjs.org/"
    base = package.rsplit("/", 1)[-1]
    return entry.get("resolved") or f"{registry.rstrip('/')}/{package}/-/{base}-{entry['version']}.tgz"


def download_npm_files(root, package, paths, dest):
    """Write ``paths`` of ``package`` (the version ``package-lock.json`` pins) under ``dest``
    from the registry's tarball, after checking the lock file's integrity hash.  Raises on
    any failure (network, hash mismatch, a path missing from the tarball)."""
    entry = _lock_entry(root, package)
    url = _registry_tarball(package, entry)
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    algorithm, _, expected = entry["integrity"].partition("-")
    got = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if got != expected:
        raise ValueError(f"{url}: {algorithm} {got} is not package-lock.json's {expected}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for path in paths:
            member = tar.extractfile(f"package/{path}")  # npm tarballs keep files under package/
            if member is None:
                raise FileNotFoundError(f"{url} has no {path}")
            target = os.path.join(dest, *path.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as out:
                out.write(member.read())
    return url


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[PTH_SOURCE] = PTH_TARGET
        if version == "editable":
            self._prepare_editable_npm_files()
        else:
            self._include_npm_files(build_data)

    def _node_modules(self, package):
        return {os.path.join(self.root, "node_modules", package, *path.split("/")): path
                for path in NPM_FILES[package]}

    def _npm_ci_if_needed(self):
        """``npm ci`` when some package's files are missing from node_modules/ and npm exists."""
        if all(os.path.isfile(p) for package in NPM_FILES for p in self._node_modules(package)):
            return
        npm = shutil.which("npm")
        if npm and os.path.isfile(os.path.join(self.root, "package-lock.json")):
            _note("node_modules/ lacks files of the UI's npm packages: running `npm ci`")
            subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=self.root, check=True)

    def _download(self, package, dest):
        try:
            url = download_npm_files(self.root, package, NPM_FILES[package], dest)
        except Exception as exc:
            _note(f"{package}: not in node_modules/ and not downloadable from the npm registry ({exc!r}): "
                  "building WITHOUT it; its server will say so (install Node.js/npm, or reach the registry, "
                  "and rebuild)")
            return False
        _note(f"{package}: no npm here; took {url} (integrity checked against package-lock.json)")
        return True

    def _prepare_editable_npm_files(self):
        """Editable: the server reads node_modules/ of the checkout; with no npm, fill the
        source tree's (git-ignored) vendor/ from the registry instead."""
        self._npm_ci_if_needed()
        for package, paths in NPM_FILES.items():
            if all(os.path.isfile(p) for p in self._node_modules(package)):
                continue
            dest = os.path.join(self.root, "src", *VENDOR_TARGET.split("/"), package)
            if not all(os.path.isfile(os.path.join(dest, *p.split("/"))) for p in paths):
                self._download(package, dest)

    def finalize(self, version, build_data, artifact_path):
        if getattr(self, "_staging", None):
            shutil.rmtree(self._staging, ignore_errors=True)

    def _include_npm_files(self, build_data):
        self._npm_ci_if_needed()
        staging = self._staging = None
        for package, paths in NPM_FILES.items():
            files = self._node_modules(package)
            if not all(os.path.isfile(p) for p in files):
                staging = self._staging = staging or tempfile.mkdtemp(prefix="primus-lens-npm-")
                dest = os.path.join(staging, package)
                if not self._download(package, dest):
                    continue
                files = {os.path.join(dest, *p.split("/")): p for p in paths}
            build_data["force_include"].update(
                {source: f"{VENDOR_TARGET}/{package}/{path}" for source, path in files.items()})
