"""THE registry: integrations and hook plugins, built-in or third-party, through one entry-point group.

Every entry point of the ``primus_lens`` group names a module.  A module that declares
``INTEGRATIONS = (Integration(...), ...)`` (``core/integration.py``) contributes those
integrations: their import watches, version gate and detection hints.  Every entry-point
module is also registered as a pluggy plugin (its ``@hookimpl`` functions: sinks,
``lens_run_started`` ...).  Built-ins are found exactly like third parties; a source tree
without installed metadata falls back to the generated ``core/index.py``.

Start-up never comes here: ``core/autoload.py`` reads the generated index (importing
``importlib.metadata`` costs ~15 ms).  Third-party watches are added when the worker builds
its plugin manager (off the training thread) or on ``install()``.

    python -m primus_lens_wandb_exporter.core.registry --write-index   # after changing a declaration
"""

import functools
import importlib
import logging
import os
import sys
from typing import Iterable, Optional, Tuple

from .integration import Integration, NotEnabled, VersionDeclined, Watch
from .log import get_logger, log_once, raise_if_testing

GROUP = "primus_lens"
_PACKAGE = "primus_lens_wandb_exporter."
_INTEGRATIONS_PACKAGE = _PACKAGE + "integrations."


# --------------------------------------------------------------------------- discovery


def _entry_points():
    from importlib import metadata

    try:
        return list(metadata.entry_points(group=GROUP))
    except TypeError:  # Python < 3.10
        return list(metadata.entry_points().get(GROUP, ()))


def plugin_modules() -> Tuple[Tuple[str, str], ...]:
    """(entry-point name, module) of the group: installed entry points, then built-ins the
    metadata lacks (a source tree run without ``pip install``)."""
    from . import index

    out, seen = [], set()
    for ep in _entry_points():
        if ep.name in seen:
            continue
        seen.add(ep.name)
        out.append((ep.name, ep.value))
    for name, module in index.PLUGINS.items():
        if name not in seen:
            out.append((name, module))
    return tuple(out)


def declared(module) -> Tuple[Integration, ...]:
    """The ``INTEGRATIONS`` a module declares (``()`` for a plain hook plugin)."""
    found = getattr(module, "INTEGRATIONS", ())
    return tuple(i for i in found if isinstance(i, Integration))


@functools.lru_cache(maxsize=1)
def integrations() -> Tuple[Integration, ...]:
    """Every declared integration: built-ins in index order, then third parties (cached).

    A module that fails to import is skipped (``create_plugin_manager`` warns about it once).
    """
    from . import index

    out, names = [], set()
    modules = list(index.INTEGRATION_MODULES)
    modules += [value.split(":")[0] for _name, value in plugin_modules()
                if value.split(":")[0] not in modules]
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            get_logger().debug("integration module %s skipped: %r", module_name, exc)
            continue
        for integration in declared(module):
            if integration.name not in names:
                names.add(integration.name)
                out.append(integration)
    return tuple(out)


def find(name: str, module_name: Optional[str] = None) -> Integration:
    """The integration ``name`` (imported from ``module_name`` when given: start-up hooks)."""
    if module_name is not None:
        for integration in declared(importlib.import_module(module_name)):
            if integration.name == name:
                return integration
    for integration in integrations():
        if integration.name == name:
            return integration
    raise LookupError(f"no integration named {name!r}")


def allowed(integration: Integration, disabled: Iterable[str]) -> bool:
    """Not switched off by ``PRIMUS_LENS_DISABLED_INTEGRATIONS`` (``*``, its name or its family)."""
    disabled = set(disabled)
    return not ("*" in disabled or integration.name in disabled
                or (integration.family is not None and integration.family in disabled))


# --------------------------------------------------------------------------- the one skeleton


def _did_not_enable(integration: Integration, exc: NotEnabled) -> None:
    # Once per (integration, reason): a Lightning Trainer per run asks the gate again.
    if isinstance(exc, VersionDeclined):
        log_once(("not-enabled", integration.name, str(exc)), logging.WARNING,
                 "integration %s did not enable: %s; its adapter stays off "
                 "(releases checked: docs/frameworks/verified.md)", integration.name, exc)
        return
    log_once(("not-enabled", integration.name, str(exc)), logging.DEBUG,
             "integration %s did not enable: %s", integration.name, exc)


def report_failure(name: str, exc: BaseException) -> None:
    """An unexpected error while enabling an integration: one warning; raised under testing."""
    get_logger().warning("integration %s did not enable: %r", name, exc)
    raise_if_testing(exc)


def run_watch(integration: Integration, watch: Optional[Watch], module):
    """THE on-import skeleton: recorder enabled? -> version gate -> ``setup(module)``.

    ``NotEnabled`` (from the gate or from ``setup``) is one debug line and nothing patched;
    any other exception is one warning (raised under ``PRIMUS_LENS_TESTING``), never the
    user's import.  Returns what ``setup`` returns (``None`` when it did not enable).
    """
    from .recorder import get_recorder

    watch = watch or integration.watches[0]
    try:
        if not get_recorder().enabled:
            return None
        integration.check_version(module)
        setup = getattr(importlib.import_module(integration.module), watch.setup)
        return setup(module)
    except NotEnabled as exc:
        _did_not_enable(integration, exc)
    except Exception as exc:  # never break the user's import
        report_failure(integration.name, exc)
    return None


def gate(integration: Integration, watched=None) -> bool:
    """For entries without a watch (Lightning's callbacks factory): hook on, not disabled,
    recorder enabled, version inside the range.  ``False`` logs why once (debug)."""
    from .autoload import disabled_integrations, hook_enabled
    from .recorder import get_recorder

    if not hook_enabled() or not allowed(integration, disabled_integrations()):
        return False
    if not get_recorder().enabled:
        return False
    try:
        integration.check_version(watched)
    except NotEnabled as exc:
        _did_not_enable(integration, exc)
        return False
    return True


def add_watches(disabled: Iterable[str] = ()) -> None:
    """Watch the imports of every allowed integration the start-up index does not know
    (third parties); a watched module already imported is set up at once."""
    from . import autoload, index

    disabled = tuple(disabled)
    for integration in integrations():
        if integration.name in index.NAMES or not allowed(integration, disabled):
            continue
        for watch in integration.watches:
            autoload.add_hook(watch.module, integration.name, integration)


# --------------------------------------------------------------------------- pluggy


def _is_integration(name: str, value: str) -> bool:
    # Our own non-integration modules (sinks, heuristics) are never opted out: "*" keeps delivery.
    return not value.startswith(_PACKAGE) or value.startswith(_INTEGRATIONS_PACKAGE)


def create_plugin_manager(disabled: Iterable[str] = (), extra: Optional[dict] = None):
    """A PluginManager with every allowed plugin registered; third-party watches added."""
    import pluggy

    from . import hookspecs

    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = {d.lower() for d in disabled}
    for name, value in list(plugin_modules()) + list((extra or {}).items()):
        if _is_integration(name, value) and ("*" in disabled or name.lower() in disabled):
            continue
        if pm.get_plugin(name) is not None:
            continue
        try:
            plugin = importlib.import_module(value.split(":")[0])
            if ":" in value:
                plugin = getattr(plugin, value.split(":")[1])
            if not pm.is_registered(plugin):
                pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin never breaks the host
            get_logger().warning("plugin %r (%s) skipped: %r", name, value, exc)
            raise_if_testing(exc)
    try:
        pm.check_pending()
    except Exception as exc:
        get_logger().warning("plugin hook mismatch: %r", exc)
        raise_if_testing(exc)
    try:
        add_watches(disabled)
    except Exception as exc:
        get_logger().warning("third-party import watches not added: %r", exc)
        raise_if_testing(exc)
    return pm


def call_safely(hook, **kwargs):
    """Call a hook; a raising implementation is logged once and skipped."""
    results = []
    for impl in reversed(hook.get_hookimpls()):
        try:
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            result = impl.function(**args)
            if result is not None:
                results.append(result)
        except Exception as exc:
            log_once(("hook", hook.name, impl.plugin_name), logging.WARNING,
                     "plugin %s failed in %s: %r", impl.plugin_name, hook.name, exc)
            raise_if_testing(exc)
    return results


# --------------------------------------------------------------------------- the start-up index


def _pyproject_plugins(root: str) -> dict:
    import tomllib

    with open(os.path.join(root, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    return dict(project["entry-points"][GROUP])


def render_index(root: Optional[str] = None) -> str:
    """The text of ``core/index.py`` from pyproject's entry points and the declarations."""
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    plugins = _pyproject_plugins(root)
    modules = [m for m in plugins.values() if m.startswith(_INTEGRATIONS_PACKAGE)]
    watched, names, exports = {}, [], {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for integration in declared(module):
            names.append(integration.name)
            for watch in integration.watches:
                watched.setdefault(watch.module, []).append((integration.name, integration.family, module_name))
            for export in integration.exports:
                exports[export] = module_name
    lines = ['"""GENERATED by ``python -m primus_lens_wandb_exporter.core.registry --write-index``: do not edit.',
             "",
             "The start-up copy of the integrations' declarations (``INTEGRATIONS`` in each",
             "``integrations/*.py``): the ``.pth`` line reads this instead of ``importlib.metadata``",
             "(15 ms to import).  ``tests/core/test_registry.py`` fails when it drifts.",
             '"""', "",
             "# entry-point name -> module (pyproject's primus_lens group; the fallback without metadata)",
             "PLUGINS = {"]
    lines += [f"    {name!r}: {module!r}," for name, module in plugins.items()]
    lines += ["}", "", "# integration modules, in the order detection reads their hints",
              "INTEGRATION_MODULES = ("]
    lines += [f"    {module!r}," for module in modules]
    lines += [")", "", "# names of the built-in integrations", "NAMES = frozenset({"]
    lines += [f"    {name!r}," for name in names]
    lines += ["})", "", "# watched module -> ((integration, family, integration module), ...)", "WATCHED = {"]
    for watched_module, entries in watched.items():
        lines.append(f"    {watched_module!r}: (")
        lines += [f"        {entry!r}," for entry in entries]
        lines.append("    ),")
    lines += ["}", "", "# public lazy name of the package -> integration module", "EXPORTS = {"]
    lines += [f"    {name!r}: {module!r}," for name, module in exports.items()]
    lines += ["}", ""]
    return "\n".join(lines)


def write_index(path: Optional[str] = None) -> str:
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_index())
    return path


if __name__ == "__main__":  # pragma: no cover - a developer command
    if sys.argv[1:] == ["--write-index"]:
        print("wrote", write_index())
    else:
        print(__doc__)
