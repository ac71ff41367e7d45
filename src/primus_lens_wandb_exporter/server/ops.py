"""The operator surface of the Lens server: probes, deleting a workload, retention.

``/livez`` answers while the process serves requests and never touches the
database, so an orchestrator restarts a pod only when the process itself is
stuck; ``/readyz`` answers 503 while the database is unreachable, so a
PostgreSQL restart takes the pods out of the Service instead of restarting all
of them.  ``/health`` (the old combined check with the counters) is unchanged.

``DELETE /api/v1/workloads/{uid}`` removes everything stored for a workload (the routes
are in :mod:`.routes.ops`);
``serve --retention-days N`` runs :class:`Retention`, which deletes workloads
whose last report is older than N days, at start and then every hour.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

log = logging.getLogger("primus_lens.server")

#: seconds between two retention sweeps
RETENTION_INTERVAL = 3600.0


class Retention:
    """Deletes workloads not updated for ``days`` days, at start and every ``interval`` seconds."""

    def __init__(self, store, days: float, interval: float = RETENTION_INTERVAL):
        self.store = store
        self.days = days
        self.interval = interval
        # In the store's counters, so /health and /metrics show them (and a sweep that keeps failing).
        for key in ("retention_sweeps", "retention_deleted_workloads", "retention_errors"):
            store.counters.setdefault(key, 0)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="lens-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10)

    def sweep(self) -> int:
        """Delete the workloads older than the limit now; return how many."""
        cutoff_ms = (time.time() - self.days * 86400.0) * 1000.0
        uids = self.store.delete_workloads_before(cutoff_ms)
        self.store.counters["retention_sweeps"] += 1
        self.store.counters["retention_deleted_workloads"] += len(uids)
        if uids:
            log.info("retention: deleted %d workloads not updated for %g days: %s", len(uids), self.days,
                     ", ".join(uids[:20]) + (" ..." if len(uids) > 20 else ""))
        return len(uids)

    def _loop(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception as e:  # the database may be down: try again at the next interval
                self.store.counters["retention_errors"] += 1
                log.warning("retention sweep failed (will retry in %gs): %s", self.interval, e)
            if self._stop.wait(self.interval):
                return


class DatabaseUnavailable(Exception):
    """The database could not be opened within ``serve --db-wait``; the message is one line."""


def _one_line(e: BaseException) -> str:
    # psycopg's messages span lines ("...Connection refused\n\tIs the server running..."):
    # one line, so the start-up error is a single line in any log.
    return " ".join(str(e).split()) or type(e).__name__


#: PostgreSQL's answers at connection time that no wait cures (psycopg gives connection
#: errors no SQLSTATE, so the server's message is what tells them apart)
_PERMANENT = ("does not exist", "password authentication failed", "no pg_hba.conf entry",
              "authentication failed", "invalid dsn", "invalid connection option")


def _transient(e: BaseException) -> bool:
    """A PostgreSQL connection error that waiting can cure: refused, unresolvable,
    timed out, "the database system is starting up", too many connections ...
    A wrong password, an unknown database or role fails at once.  Unknown
    errors count as transient (the wait is bounded anyway)."""
    text = str(e).lower()
    return not any(p in text for p in _PERMANENT)


def open_store_waiting(db_url: str, wait: float, where: str, sleep=time.sleep):
    """Open (and migrate) ``db_url``, retrying with backoff for up to ``wait``
    seconds while the database cannot be reached (PostgreSQL starting, a network
    blip).  Logs one line per failed attempt; raises :class:`DatabaseUnavailable`
    with one line when it gives up, and at once for errors a retry cannot fix."""
    from .storage import open_store

    retryable: tuple = ()
    if not db_url.startswith("sqlite"):
        import psycopg

        # OperationalError: refused, unresolvable, timed out, "database system is starting up".
        retryable = (psycopg.OperationalError,)
    deadline = time.monotonic() + wait
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            return open_store(db_url)
        except retryable as e:
            if not _transient(e):
                raise DatabaseUnavailable(f"cannot open the database {where}: {_one_line(e)}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"cannot reach the database {where} after {attempt} attempts in {wait:g}s: {_one_line(e)} "
                    "(start it, fix --db / PRIMUS_LENS_DB, or wait longer with --db-wait)") from None
            log.warning("database %s not reachable (attempt %d, retrying in %.1fs, giving up in %.0fs): %s",
                        where, attempt, min(delay, left), left, _one_line(e))
            sleep(min(delay, left))
            delay = min(delay * 2, 10.0)
        except Exception as e:  # a bad path, wrong password, an unwritable directory: no retry helps
            raise DatabaseUnavailable(f"cannot open the database {where}: {_one_line(e)}") from None
