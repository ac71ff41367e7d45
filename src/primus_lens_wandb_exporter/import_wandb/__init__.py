"""``primus-lens import-wandb PATH``: backfill W&B runs already on disk into Lens.

A run's ``run-<id>.wandb`` file is W&B's own transaction log: a LevelDB-style log (32 KiB
blocks of CRC-checked chunks) of protobuf ``Record`` messages, everything the W&B client
recorded for the run: the run (project, name, tags, config), ``define_metric`` records,
history rows (with ``_step``, the row index, and the step_sync values W&B filled in),
summary updates and the exit code.  wandb 0.31 ships no Python reader of that log (its
reader lives in the Go ``wandb-core``), so :func:`read_records` reads the log format here
and parses each record with wandb's own ``wandb_internal_pb2.Record``.

What Lens receives is what the live exporter would have sent for the same run: every
numeric history key as a point (``row`` = ``_step``, ``step`` = the key's define_metric step
metric in that row, else the row), values normalised by ``core/normalize.py``, the run
record and a detection report saying the data came from an import.  Requests go through
the exporter's own ``HttpSink`` (retries, backoff, token).  Point identity includes the
row, so importing twice replaces instead of duplicating.

wandb is needed only by this command (it is not a dependency of the exporter).

Modules by job: :mod:`.reader` (the ``.wandb`` log format, finding run files),
:mod:`.importer` (one run's records through W&B's step rules into points, the run record
and the detection report), :mod:`.sender` (delivery through the exporter's ``HttpSink``),
:mod:`.command` (the command line, progress and summary output).
"""

from .command import cmd_import_wandb, register
from .importer import RunImporter, RunResult, default_workload_uid
from .reader import MissingWandb, WandbFileError, find_run_files, read_records
from .sender import DeliveryError, Sender

__all__ = ["DeliveryError", "MissingWandb", "RunImporter", "RunResult", "Sender", "WandbFileError",
           "cmd_import_wandb", "default_workload_uid", "find_run_files", "read_records", "register"]
