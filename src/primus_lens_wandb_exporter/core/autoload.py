"""Post-import hooks behind the ``.pth`` start-up line.

The start-up line runs in every interpreter of the environment, so this module is
kept to the standard library's already-loaded parts: it imports nothing, patches
nothing, and only puts a small finder at the front of ``sys.meta_path``.  When a
watched module (``wandb``, ``transformers.trainer`` ...) finishes importing, the
integration that owns it is imported and patches it; if the module is already
imported when :func:`install` runs, the patch happens at once.
"""

import os
import sys

# integration name -> (watched module, "module:function" called with the imported module).
# Built-in integrations only; third-party plugins come through the ``primus_lens``
# entry-point group, loaded later off the training thread.
WATCHES = {
    "wandb": ("wandb", "primus_lens_wandb_exporter.integrations.wandb:on_import"),
    "transformers": ("transformers.trainer", "primus_lens_wandb_exporter.integrations.transformers:on_import"),
    "deepspeed": ("deepspeed.monitor.monitor", "primus_lens_wandb_exporter.integrations.deepspeed:on_import"),
    "megatron": ("megatron.training.training", "primus_lens_wandb_exporter.integrations.megatron:on_import"),
    "megatron_bridge": (
        "megatron.bridge.training.callbacks",
        "primus_lens_wandb_exporter.integrations.megatron:on_bridge_import",
    ),
    "primus": ("primus.core.runtime.train_runtime", "primus_lens_wandb_exporter.integrations.primus:on_import"),
    "torchtitan": ("torchtitan.components.metrics", "primus_lens_wandb_exporter.integrations.torchtitan:on_import"),
    # MaxText moved its logger twice (2026-01): every location is watched.
    "maxtext": ("MaxText.metric_logger", "primus_lens_wandb_exporter.integrations.jax:on_maxtext_import"),
    "maxtext_common": ("MaxText.common.metric_logger", "primus_lens_wandb_exporter.integrations.jax:on_maxtext_import"),
    "maxtext_pkg": ("maxtext.common.metric_logger", "primus_lens_wandb_exporter.integrations.jax:on_maxtext_import"),
    "clu": ("clu.metric_writers", "primus_lens_wandb_exporter.integrations.jax:on_clu_import"),
    "keras": ("keras", "primus_lens_wandb_exporter.integrations.keras:on_import"),
    "keras_wandb": ("wandb.integration.keras", "primus_lens_wandb_exporter.integrations.keras:on_wandb_keras_import"),
    "pytorch": ("torch.optim.optimizer", "primus_lens_wandb_exporter.integrations.pytorch:on_import"),
}

_FALSE = ("0", "false", "no", "off", "disabled")
_finder = None
_hooks = {}  # watched module -> [(integration, target)]
_fired = set()


def hook_enabled(environ=os.environ):
    """``PRIMUS_LENS_WANDB_HOOK=false`` turns every patch off."""
    return environ.get("PRIMUS_LENS_WANDB_HOOK", "true").strip().lower() not in _FALSE


def disabled_integrations(environ=os.environ):
    """Names listed in ``PRIMUS_LENS_DISABLED_INTEGRATIONS`` (``*`` means all)."""
    raw = environ.get("PRIMUS_LENS_DISABLED_INTEGRATIONS", "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def _integration_allowed(name, disabled):
    if "*" in disabled or name in disabled:
        return False
    # "megatron" also switches the Megatron-Bridge hook off; "jax" the MaxText/CLU hooks.
    family = {"megatron_bridge": "megatron", "maxtext": "jax", "maxtext_common": "jax", "maxtext_pkg": "jax",
              "clu": "jax", "keras_wandb": "keras"}.get(name)
    return family not in disabled


class _HookedLoader:
    """Delegates to the real loader and runs our hooks once the module has executed."""

    def __init__(self, loader, fullname):
        self._loader = loader
        self._fullname = fullname

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        finally:
            # Put the real loader back so nothing downstream ever sees ours.
            try:
                module.__loader__ = self._loader
                if getattr(module, "__spec__", None) is not None:
                    module.__spec__.loader = self._loader
            except Exception:
                pass
        _run_hooks(self._fullname, module)


class _Watchdog:
    """A meta-path finder that only wraps the loaders of watched modules."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _hooks or fullname in self._busy or fullname in _fired:
            return None
        self._busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is None:
                    continue
                loader = spec.loader
                if loader is not None and hasattr(loader, "exec_module"):
                    spec.loader = _HookedLoader(loader, fullname)
                return spec
            return None
        finally:
            self._busy.discard(fullname)

    def invalidate_caches(self):
        pass


def _run_hooks(fullname, module):
    if fullname in _fired:
        return
    _fired.add(fullname)
    for integration, target in _hooks.get(fullname, ()):
        try:
            module_name, func_name = target.split(":")
            import importlib

            func = getattr(importlib.import_module(module_name), func_name)
            func(module)
        except Exception as exc:  # never break the user's import
            _report_hook_error(integration, exc)


def _report_hook_error(integration, exc):
    try:
        from .log import get_logger, raise_if_testing

        get_logger().warning("integration %s did not enable: %r", integration, exc)
        raise_if_testing(exc)
    except ImportError:
        pass


def bootstrap(environ=os.environ):
    """Install the import watcher (idempotent). Called by the start-up line."""
    global _finder
    if _finder is not None or not hook_enabled(environ):
        return
    disabled = disabled_integrations(environ)
    for integration, (module_name, target) in WATCHES.items():
        if _integration_allowed(integration, disabled):
            _hooks.setdefault(module_name, []).append((integration, target))
    _finder = _Watchdog()
    sys.meta_path.insert(0, _finder)


def install(environ=os.environ):
    """Install the hook now (notebooks, or an environment without the start-up line).

    Patches modules that are already imported at once; others when they are imported.
    Returns True when the hook is active.
    """
    bootstrap(environ)
    if _finder is None:
        return False
    for module_name in list(_hooks):
        module = sys.modules.get(module_name)
        if module is not None:
            _run_hooks(module_name, module)
    return True


def uninstall():
    """Remove the import watcher and undo every patch we made."""
    global _finder
    if _finder is not None:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
    _finder = None
    _hooks.clear()
    _fired.clear()
    try:
        from .patching import undo_all

        undo_all()
    except Exception:
        pass
