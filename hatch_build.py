"""Hatch build hook: put the start-up line into site-packages for wheel and editable installs.

pip installs every ``*.pth`` at the root of a wheel into site-packages, and the
interpreter executes its ``import`` line at start-up.  That is what makes
``pip install primus-lens-wandb-exporter`` enough to mirror wandb calls.
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_SOURCE = "src/primus_lens_wandb_exporter.pth"
# Hatchling's own editable .pth is "_primus_lens_wandb_exporter.pth"; ours sorts after it,
# so the source directory is already on sys.path when our line runs.
PTH_TARGET = "primus_lens_wandb_exporter.pth"


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[PTH_SOURCE] = PTH_TARGET
