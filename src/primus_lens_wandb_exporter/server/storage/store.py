"""The Lens store: the write side, the queries and retention over one backend contract.

``SQLiteStore`` and ``PostgresStore`` subclass :class:`Store` and provide the
:class:`~.backend.Backend` contract (connections, transactions, the statements whose
SQL differs).  Where each job lives:

* :mod:`.model`: ``SeriesBatch``, ``IngestResult``, column lists, the row helpers;
* :mod:`.ingest`: ``ingest`` / ``ingest_many`` (group commit);
* :mod:`.summaries`: reading series summaries (cached while the only writer) and existing rows;
* :mod:`.rollup_upkeep`: rollup rows of the blocks a batch touched (math in :mod:`.rollup`);
* :mod:`.reports`: detection and run upserts;
* :mod:`.queries`: workloads, sources, available metrics, points (:mod:`.downsample`);
* :mod:`.runs`: the runs table (filter, sort, group; syntax in :mod:`.runs_filter`);
* :mod:`.retention`: deleting workloads.
"""

from __future__ import annotations

from .ingest import Ingest
from .queries import Queries
from .retention import Retention
from .runs import Runs


class Store(Ingest, Queries, Runs, Retention):
    """A Lens database.  Thread-safe: ingest may be called from many threads."""
