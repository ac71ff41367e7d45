"""Hatch build hook: what a wheel needs beyond the package's own files.

1. The start-up line, for wheel and editable installs.  pip installs every ``*.pth`` at
   the root of a wheel into site-packages, and the interpreter executes its ``import``
   line at start-up.  That is what makes ``pip install primus-lens-wandb-exporter``
   enough to mirror wandb calls.

2. The browser packages from npm (pinned in ``package.json``/``package-lock.json``), for
   regular wheels only: the web UI's charting library uPlot (``uplot``) and Swagger UI
   (``swagger-ui-dist``, for ``/api/docs``).  The files of ``NPM_FILES`` (scripts,
   stylesheets, licences and package.json) go from ``node_modules/<package>/<path>`` to
   ``primus_lens_wandb_exporter/server/ui/vendor/<package>/<path>``, the layout
   ``server/ui/npm.py`` looks for (``npm ci`` is run first when they are missing and npm
   is available).  Without npm the wheel is built without them and says so; its server
   then shows what to run instead of charts and of the API page.  Editable installs serve
   ``node_modules/`` of the checkout directly.
"""

import os
import shutil
import subprocess
import sys

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


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[PTH_SOURCE] = PTH_TARGET
        if version != "editable":
            self._include_npm_files(build_data)

    def _include_npm_files(self, build_data):
        root = self.root
        wanted = {package: {os.path.join(root, "node_modules", package, *path.split("/")):
                            f"{VENDOR_TARGET}/{package}/{path}" for path in paths}
                  for package, paths in NPM_FILES.items()}

        def complete(files):
            return all(os.path.isfile(p) for p in files)

        if not all(map(complete, wanted.values())) and os.path.isfile(os.path.join(root, "package-lock.json")):
            npm = shutil.which("npm")
            if npm:
                _note("node_modules/ lacks files of the UI's npm packages: running `npm ci`")
                subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=root, check=True)
            else:
                _note("npm is not installed and node_modules/ lacks files of the UI's npm packages: building "
                      "the wheel WITHOUT them (its server will say so); install Node.js/npm and rebuild")
        for package, files in wanted.items():
            if complete(files):
                build_data["force_include"].update(files)
            else:
                _note(f"node_modules/{package} is incomplete: the wheel goes without it")
