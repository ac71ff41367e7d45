"""The PluginManager: built-ins and third-party plugins through one entry-point group.

Discovery is guarded: a plugin that fails to import or register is skipped with
one warning, and the host keeps working.  ``PRIMUS_LENS_DISABLED_INTEGRATIONS``
(``*`` = all) keeps named plugins out.
"""

import importlib
from importlib import metadata
from typing import Iterable, Optional

import pluggy

from . import hookspecs
from .log import get_logger, raise_if_testing

GROUP = hookspecs.PROJECT

# Used when the package runs from a source tree without installed metadata.
BUILTINS = {
    "wandb": "primus_lens_wandb_exporter.integrations.wandb",
    "http_sink": "primus_lens_wandb_exporter.core.transport",
    "jsonl_sink": "primus_lens_wandb_exporter.core.spool",
    "heuristics": "primus_lens_wandb_exporter.core.detection",
}
# Sinks are not integrations: "*" in the opt-out list never disables delivery.
SINKS = frozenset({"http_sink", "jsonl_sink", "heuristics"})


def _entry_points():
    try:
        return list(metadata.entry_points(group=GROUP))
    except TypeError:  # Python < 3.10
        return list(metadata.entry_points().get(GROUP, ()))


def _allowed(name: str, disabled: Iterable[str]) -> bool:
    if name in SINKS:
        return True
    disabled = set(disabled)
    return not ("*" in disabled or name.lower() in disabled)


def create_plugin_manager(disabled: Iterable[str] = (), extra: Optional[dict] = None) -> pluggy.PluginManager:
    """A PluginManager with every allowed plugin registered."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = tuple(disabled)
    seen = set()
    for ep in _entry_points():
        if ep.name in seen or not _allowed(ep.name, disabled):
            continue
        seen.add(ep.name)
        try:
            plugin = ep.load()
            if pm.get_plugin(ep.name) is None and not pm.is_registered(plugin):
                pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin never breaks the host
            get_logger().warning("plugin %r (%s) skipped: %r", ep.name, getattr(ep, "value", "?"), exc)
            raise_if_testing(exc)
    for name, module_name in {**BUILTINS, **(extra or {})}.items():
        if name in seen or not _allowed(name, disabled):
            continue
        try:
            pm.register(importlib.import_module(module_name), name=name)
        except Exception as exc:
            get_logger().warning("plugin %r skipped: %r", name, exc)
            raise_if_testing(exc)
    try:
        pm.check_pending()
    except Exception as exc:
        get_logger().warning("plugin hook mismatch: %r", exc)
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
            from .log import log_once
            import logging

            log_once(("hook", hook.name, impl.plugin_name), logging.WARNING,
                     "plugin %s failed in %s: %r", impl.plugin_name, hook.name, exc)
            raise_if_testing(exc)
    return results
