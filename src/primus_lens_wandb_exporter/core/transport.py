"""Moved to ``sinks/http.py``: re-exports for cli/import_wandb and the ``http_sink`` entry point (removed with the shims)."""
from ..sinks.http import ENDPOINT_DETECTION, ENDPOINT_METRICS, ENDPOINT_RUN, HttpSink, lens_make_sinks  # noqa: F401
