"""Primus Lens WandB exporter: mirror every wandb call to Lens, with no code changes.

``pip install primus-lens-wandb-exporter`` is enough: a start-up line shipped in the
wheel watches for ``import wandb`` and patches it then.  This module stays cheap to
import (it runs in every interpreter of the environment); public names load lazily.
"""

__all__ = [
    "__version__",
    "install",
    "uninstall",
    "get_recorder",
    "LensLogger",
    "LensCallback",
    "LensTrainerCallback",
    "LensDeepSpeedMonitor",
]

# Lazy, even __version__: this package is imported by the start-up line of every interpreter.
# The integrations' public classes (LensLogger ...) come from their declarations
# (``Integration.exports``, copied into the generated ``core/index.py``).
_LAZY = {
    "__version__": ("primus_lens_wandb_exporter._version", "__version__"),
    "install": ("primus_lens_wandb_exporter.core.autoload", "install"),
    "uninstall": ("primus_lens_wandb_exporter.core.autoload", "uninstall"),
    "get_recorder": ("primus_lens_wandb_exporter.core.recorder", "get_recorder"),
}


def __getattr__(name):
    import importlib

    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        from .core.index import EXPORTS

        if name not in EXPORTS:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        module_name, attr = EXPORTS[name], name
    return getattr(importlib.import_module(module_name), attr)
