"""Hatch build hook: what a wheel needs beyond the package's own files.

1. The start-up line, for wheel and editable installs.  pip installs every ``*.pth`` at
   the root of a wheel into site-packages, and the interpreter executes its ``import``
   line at start-up.  That is what makes ``pip install primus-lens-wandb-exporter``
   enough to mirror wandb calls.

2. The web UI's charting library, uPlot (npm package ``uplot``, pinned in
   ``package.json``/``package-lock.json``), for regular wheels only: its script,
   stylesheet, licence and package.json go to
   ``primus_lens_wandb_exporter/server/ui/vendor/``.  They come from ``node_modules/``
   (``npm ci`` is run first when it is missing and npm is available).  Without npm the
   wheel is built without them and says so; its server then shows what to run instead
   of charts.  Editable installs serve ``node_modules/uplot/dist`` of the checkout
   directly (see ``server/ui/__init__.py``).
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

UPLOT_DIR = os.path.join("node_modules", "uplot")
UPLOT_FILES = {  # path under node_modules/uplot -> name in the wheel's vendor folder
    "dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "dist/uPlot.min.css": "uPlot.min.css",
    "LICENSE": "LICENSE",
    "package.json": "package.json",
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
            self._include_uplot(build_data)

    def _include_uplot(self, build_data):
        root = self.root
        uplot = os.path.join(root, UPLOT_DIR)
        sources = {os.path.join(uplot, src): dst for src, dst in UPLOT_FILES.items()}
        if not all(os.path.isfile(p) for p in sources) and os.path.isfile(os.path.join(root, "package-lock.json")):
            npm = shutil.which("npm")
            if npm:
                _note("node_modules/uplot is missing: running `npm ci`")
                subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=root, check=True)
            else:
                _note("npm is not installed and node_modules/uplot is missing: building the wheel WITHOUT "
                      "the UI's charting library (its server will say so); install Node.js/npm and rebuild")
        if not all(os.path.isfile(p) for p in sources):
            return
        for path, name in sources.items():
            build_data["force_include"][path] = f"{VENDOR_TARGET}/{name}"
