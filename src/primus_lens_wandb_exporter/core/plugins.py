"""Shim (issue-12 fan-out): the plugin manager moved to ``core/registry.py``; the lead removes this."""

from .registry import GROUP, call_safely, create_plugin_manager  # noqa: F401
