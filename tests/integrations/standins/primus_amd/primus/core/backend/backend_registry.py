"""Stand-in for ``primus.core.backend.backend_registry.BackendRegistry``: the adapter of
backend ``<name>`` lives in ``primus.backends.<name>``."""

import importlib


class BackendRegistry:
    @staticmethod
    def get_adapter(backend, backend_path=None):
        module = importlib.import_module(f"primus.backends.{backend}.{backend}_adapter")
        return module.Adapter(backend)
