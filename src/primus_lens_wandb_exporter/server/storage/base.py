"""Fan-out shim (issue 12): the old home of the store, kept while other branches still
import it; package E deletes it.  The store now lives in store.py (ingest.py,
rollup_upkeep.py, reports.py, queries.py, retention.py over backend.py) and model.py."""

from .model import MAX_REJECTED_LISTED, POINT_COLS, ROLLUP_COLS, SERIES_SUMMARY_COLS, IngestResult, SeriesBatch
from .store import Store

MetricsBatch = SeriesBatch

__all__ = ["MAX_REJECTED_LISTED", "POINT_COLS", "ROLLUP_COLS", "SERIES_SUMMARY_COLS", "IngestResult",
           "MetricsBatch", "SeriesBatch", "Store"]
