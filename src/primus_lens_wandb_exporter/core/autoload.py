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

from . import index

_FALSE = ("0", "false", "no", "off", "disabled")


class _Watcher:
    """The import watcher: process-wide by nature (one ``sys.meta_path`` per interpreter)."""

    def __init__(self):
        self.finder = None
        self.hooks = {}  # watched module -> [(integration name, integration module | Integration)]
        self.fired = set()


_watcher = _Watcher()


def hook_enabled(environ=os.environ):
    """``PRIMUS_LENS_WANDB_HOOK=false`` turns every patch off."""
    return environ.get("PRIMUS_LENS_WANDB_HOOK", "true").strip().lower() not in _FALSE


def disabled_integrations(environ=os.environ):
    """Names listed in ``PRIMUS_LENS_DISABLED_INTEGRATIONS`` (``*`` means all)."""
    raw = environ.get("PRIMUS_LENS_DISABLED_INTEGRATIONS", "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def _allowed(name, family, disabled):
    return not ("*" in disabled or name in disabled or (family is not None and family in disabled))


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
        if fullname not in _watcher.hooks or fullname in self._busy or fullname in _watcher.fired:
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
    if fullname in _watcher.fired:
        return
    _watcher.fired.add(fullname)
    for name, target in _watcher.hooks.get(fullname, ()):
        _run_hook(fullname, module, name, target)


def _run_hook(fullname, module, name, target):
    try:
        from . import registry

        integration = target if not isinstance(target, str) else registry.find(name, target)
        watch = next(w for w in integration.watches if w.module == fullname)
        registry.run_watch(integration, watch, module)
    except Exception as exc:  # never break the user's import
        _report_hook_error(name, exc)


def _report_hook_error(integration, exc):
    try:
        from .registry import report_failure

        report_failure(integration, exc)
    except ImportError:
        pass


def add_hook(module_name, name, target):
    """Watch ``module_name`` for the integration ``name`` (a third party's, added by the
    registry); set it up at once when the module is already imported."""
    if _watcher.finder is None:
        return
    entries = _watcher.hooks.setdefault(module_name, [])
    if any(existing == name for existing, _ in entries):
        return
    entries.append((name, target))
    module = sys.modules.get(module_name)
    if module is not None:
        _run_hook(module_name, module, name, target)


def bootstrap(environ=os.environ):
    """Install the import watcher (idempotent). Called by the start-up line."""
    if _watcher.finder is not None or not hook_enabled(environ):
        return
    disabled = disabled_integrations(environ)
    for module_name, entries in index.WATCHED.items():
        for name, family, integration_module in entries:
            if _allowed(name, family, disabled):
                _watcher.hooks.setdefault(module_name, []).append((name, integration_module))
    _watcher.finder = _Watchdog()
    sys.meta_path.insert(0, _watcher.finder)


def install(environ=os.environ):
    """Install the hook now (notebooks, or an environment without the start-up line).

    Patches modules that are already imported at once; others when they are imported.
    Returns True when the hook is active.
    """
    bootstrap(environ)
    if _watcher.finder is None:
        return False
    try:  # third-party integrations' watches (importlib.metadata: fine here, not at start-up)
        from .registry import add_watches

        add_watches(disabled_integrations(environ))
    except Exception as exc:
        _report_hook_error("third-party", exc)
    for module_name in list(_watcher.hooks):
        module = sys.modules.get(module_name)
        if module is not None:
            _run_hooks(module_name, module)
    return True


def uninstall():
    """Remove the import watcher and undo every patch we made."""
    if _watcher.finder is not None:
        try:
            sys.meta_path.remove(_watcher.finder)
        except ValueError:
            pass
    _watcher.finder = None
    _watcher.hooks.clear()
    _watcher.fired.clear()
    try:
        from .patching import undo_all

        undo_all()
    except Exception:
        pass
