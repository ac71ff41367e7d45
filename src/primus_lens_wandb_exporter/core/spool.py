"""Moved to ``sinks/spool.py``, ``sinks/jsonl.py``: re-exports for cli/import_wandb and the ``jsonl_sink`` entry point (removed with the shims)."""
from ..sinks.spool import Spool, default_spool_dir, stats_fallback_dir, write_file_atomic  # noqa: F401
from ..sinks.jsonl import JsonlSink, lens_make_sinks  # noqa: F401,E402
