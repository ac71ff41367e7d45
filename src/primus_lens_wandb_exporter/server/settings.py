"""Server settings, parsed once from the command line or given by tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Settings:
    """What ``create_app`` needs.  ``db_url`` is ``sqlite:///PATH`` or ``postgresql://...``."""

    db_url: str
    #: the admin tokens (``--token``), comma-separated; see :mod:`.auth` for the roles
    token: Optional[str] = None
    max_body_bytes: int = 64 * 1024 * 1024
    host: str = "127.0.0.1"
    port: int = 8080
    #: where the processes of ``serve --workers N`` share their counters (set by ``serve``)
    stats_dir: Optional[str] = None
    #: extra Host names to answer (``--allowed-host``); "*" = any. Loopback and the bound address always.
    allowed_hosts: Tuple[str, ...] = ()
    #: ``serve --retention-days``: delete workloads not updated for this many days (None: keep all)
    retention_days: Optional[float] = None
    #: ``--ingest-token``: tokens that may only POST /api/v1/wandb/* (comma-separated)
    ingest_token: Optional[str] = None
    #: ``--read-token``: tokens that may only GET/HEAD /api/v1 (comma-separated)
    read_token: Optional[str] = None
    #: ``--rollup-tails``: series whose rollup tail a process keeps in memory (None: the store's default)
    rollup_tails: Optional[int] = None
