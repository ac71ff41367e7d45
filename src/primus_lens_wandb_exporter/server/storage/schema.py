"""The Lens schema, as versioned migrations shared by SQLite and PostgreSQL.

Each migration is a list of statements written once with placeholders for the
few type names that differ (``{BIGINT}``, ``{DOUBLE}``, ``{ID}``, ``{NOROWID}``); a
``(kind, statement)`` pair applies to that database only (``"sqlite"``, ``"postgresql"``).
A ``schema_version`` table records what was applied; migrations run at start,
in order, each in its own transaction, so a newer server upgrades an older file.
"""

from __future__ import annotations

from typing import Dict, List

SQLITE_TYPES = {"BIGINT": "INTEGER", "DOUBLE": "REAL", "ID": "INTEGER PRIMARY KEY",
                "NOROWID": " WITHOUT ROWID", "KIND": "sqlite"}
POSTGRES_TYPES = {"BIGINT": "BIGINT", "DOUBLE": "DOUBLE PRECISION", "ID": "BIGSERIAL PRIMARY KEY",
                  "NOROWID": "", "KIND": "postgresql"}

MIGRATIONS: List[List[str]] = [
    # 1: initial schema
    [
        """CREATE TABLE workloads (
            workload_uid TEXT PRIMARY KEY,
            first_seen {DOUBLE} NOT NULL,       -- epoch ms, server clock
            last_update {DOUBLE} NOT NULL,      -- epoch ms of the last report of any kind
            last_point_at {DOUBLE},             -- epoch ms of the last metrics report (live status)
            det_wrapper TEXT, det_base TEXT, det_method TEXT, det_confidence {DOUBLE},
            det_reported_at {DOUBLE}, det_evidence TEXT, det_hints TEXT
        )""",
        """CREATE TABLE pods (
            workload_uid TEXT NOT NULL, pod_name TEXT NOT NULL, pod_uid TEXT NOT NULL DEFAULT '',
            namespace TEXT NOT NULL DEFAULT '', last_seen {DOUBLE} NOT NULL,
            PRIMARY KEY (workload_uid, pod_name)
        )""",
        """CREATE TABLE runs (
            workload_uid TEXT NOT NULL, run_id TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'wandb', rank {BIGINT} NOT NULL DEFAULT 0,
            project TEXT, name TEXT, entity TEXT, grp TEXT, mode TEXT, tags TEXT,
            config TEXT, summary TEXT, status TEXT, exit_code {BIGINT},
            started_at {DOUBLE}, finished_at {DOUBLE}, updated_at {DOUBLE},
            PRIMARY KEY (workload_uid, run_id)
        )""",
        """CREATE TABLE detections (
            id {ID},
            workload_uid TEXT NOT NULL, source TEXT, type TEXT, version TEXT, pod_name TEXT,
            rank {BIGINT}, run_id TEXT, wrapper TEXT, base TEXT, method TEXT, confidence {DOUBLE},
            evidence TEXT, hints TEXT, reported_at {DOUBLE} NOT NULL
        )""",
        "CREATE INDEX detections_workload ON detections (workload_uid, reported_at)",
        # One row per point, clustered on the point key so one series is one range.
        # value NULL = NaN on SQLite (which cannot store NaN); timestamp in epoch ms.
        """CREATE TABLE training_performance (
            workload_uid TEXT NOT NULL, data_source TEXT NOT NULL, metric_name TEXT NOT NULL,
            rank {BIGINT} NOT NULL, run_id TEXT NOT NULL, iteration {BIGINT} NOT NULL,
            value {DOUBLE}, timestamp {DOUBLE} NOT NULL,
            PRIMARY KEY (workload_uid, data_source, metric_name, rank, run_id, iteration)
        ){NOROWID}""",
        # Per-series summary kept at ingest: listings never scan points.
        """CREATE TABLE series (
            workload_uid TEXT NOT NULL, data_source TEXT NOT NULL, metric_name TEXT NOT NULL,
            rank {BIGINT} NOT NULL, run_id TEXT NOT NULL,
            count {BIGINT} NOT NULL, min_step {BIGINT} NOT NULL, max_step {BIGINT} NOT NULL,
            first_ts {DOUBLE} NOT NULL, last_ts {DOUBLE} NOT NULL, has_rollup {BIGINT} NOT NULL DEFAULT 0,
            PRIMARY KEY (workload_uid, data_source, metric_name, rank, run_id)
        ){NOROWID}""",
        # See storage/rollup.py: one row per (level, block of 2**level steps).
        """CREATE TABLE series_rollup (
            workload_uid TEXT NOT NULL, data_source TEXT NOT NULL, metric_name TEXT NOT NULL,
            rank {BIGINT} NOT NULL, run_id TEXT NOT NULL, level {BIGINT} NOT NULL, block {BIGINT} NOT NULL,
            n {BIGINT} NOT NULL, nf {BIGINT} NOT NULL,
            first_step {BIGINT}, first_value {DOUBLE}, first_ts {DOUBLE},
            last_step {BIGINT}, last_value {DOUBLE}, last_ts {DOUBLE},
            min_step {BIGINT}, min_value {DOUBLE}, min_ts {DOUBLE},
            max_step {BIGINT}, max_value {DOUBLE}, max_ts {DOUBLE},
            time_min {DOUBLE}, time_max {DOUBLE},
            PRIMARY KEY (workload_uid, data_source, metric_name, rank, run_id, level, block)
        ){NOROWID}""",
    ],
    # 2: compact points.  Every point row used to repeat the five text key columns;
    # now a point is (series_id, iteration, value, timestamp) clustered on
    # (series_id, iteration), with series_id = series.id.  series gains an integer
    # id (its key becomes a UNIQUE constraint), series_rollup is keyed by it too,
    # and training_performance becomes a VIEW with the old column names, so SQL
    # written against it (user guide FAQ Q9) keeps working.  Existing data moves.
    [
        """CREATE TABLE series_v2 (
            id {ID},
            workload_uid TEXT NOT NULL, data_source TEXT NOT NULL, metric_name TEXT NOT NULL,
            rank {BIGINT} NOT NULL, run_id TEXT NOT NULL,
            count {BIGINT} NOT NULL, min_step {BIGINT} NOT NULL, max_step {BIGINT} NOT NULL,
            first_ts {DOUBLE} NOT NULL, last_ts {DOUBLE} NOT NULL, has_rollup {BIGINT} NOT NULL DEFAULT 0,
            UNIQUE (workload_uid, data_source, metric_name, rank, run_id)
        )""",
        """INSERT INTO series_v2 (workload_uid, data_source, metric_name, rank, run_id, count, min_step,
                                  max_step, first_ts, last_ts, has_rollup)
           SELECT workload_uid, data_source, metric_name, rank, run_id, count, min_step, max_step, first_ts,
                  last_ts, has_rollup FROM series ORDER BY workload_uid, data_source, metric_name, rank, run_id""",
        # Points whose series has no summary row (only possible when rows were
        # written with plain SQL): give them one, so no point is lost.
        """INSERT INTO series_v2 (workload_uid, data_source, metric_name, rank, run_id, count, min_step,
                                  max_step, first_ts, last_ts, has_rollup)
           SELECT t.workload_uid, t.data_source, t.metric_name, t.rank, t.run_id, COUNT(*), MIN(t.iteration),
                  MAX(t.iteration), MIN(t.timestamp), MAX(t.timestamp), 0
           FROM training_performance t
           WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.workload_uid = t.workload_uid
                             AND s.data_source = t.data_source AND s.metric_name = t.metric_name
                             AND s.rank = t.rank AND s.run_id = t.run_id)
           GROUP BY t.workload_uid, t.data_source, t.metric_name, t.rank, t.run_id""",
        """CREATE TABLE points (
            series_id {BIGINT} NOT NULL, iteration {BIGINT} NOT NULL,
            value {DOUBLE}, timestamp {DOUBLE} NOT NULL,
            PRIMARY KEY (series_id, iteration)
        ){NOROWID}""",
        """INSERT INTO points (series_id, iteration, value, timestamp)
           SELECT s.id, t.iteration, t.value, t.timestamp
           FROM training_performance t JOIN series_v2 s ON s.workload_uid = t.workload_uid
                AND s.data_source = t.data_source AND s.metric_name = t.metric_name
                AND s.rank = t.rank AND s.run_id = t.run_id
           ORDER BY s.id, t.iteration""",
        """CREATE TABLE series_rollup_v2 (
            series_id {BIGINT} NOT NULL, level {BIGINT} NOT NULL, block {BIGINT} NOT NULL,
            n {BIGINT} NOT NULL, nf {BIGINT} NOT NULL,
            first_step {BIGINT}, first_value {DOUBLE}, first_ts {DOUBLE},
            last_step {BIGINT}, last_value {DOUBLE}, last_ts {DOUBLE},
            min_step {BIGINT}, min_value {DOUBLE}, min_ts {DOUBLE},
            max_step {BIGINT}, max_value {DOUBLE}, max_ts {DOUBLE},
            time_min {DOUBLE}, time_max {DOUBLE},
            PRIMARY KEY (series_id, level, block)
        ){NOROWID}""",
        """INSERT INTO series_rollup_v2 (series_id, level, block, n, nf, first_step, first_value, first_ts,
                                         last_step, last_value, last_ts, min_step, min_value, min_ts,
                                         max_step, max_value, max_ts, time_min, time_max)
           SELECT s.id, r.level, r.block, r.n, r.nf, r.first_step, r.first_value, r.first_ts,
                  r.last_step, r.last_value, r.last_ts, r.min_step, r.min_value, r.min_ts,
                  r.max_step, r.max_value, r.max_ts, r.time_min, r.time_max
           FROM series_rollup r JOIN series_v2 s ON s.workload_uid = r.workload_uid
                AND s.data_source = r.data_source AND s.metric_name = r.metric_name
                AND s.rank = r.rank AND s.run_id = r.run_id""",
        "DROP TABLE series_rollup",
        "DROP TABLE training_performance",
        "DROP TABLE series",
        "ALTER TABLE series_v2 RENAME TO series",
        "ALTER TABLE series_rollup_v2 RENAME TO series_rollup",
        """CREATE VIEW training_performance AS
           SELECT s.workload_uid AS workload_uid, s.data_source AS data_source, s.metric_name AS metric_name,
                  s.rank AS rank, s.run_id AS run_id, p.iteration AS iteration, p.value AS value,
                  p.timestamp AS timestamp
           FROM points p JOIN series s ON s.id = p.series_id""",
    ],
    # 3: series.rev counts the writes of a series, so a server can tell whether
    # the rollup tail it cached after its last write is still current (another
    # worker or server may have written since).  The rollup base level went from
    # blocks of 16 steps to 64: the finer rows are no longer read or maintained.
    [
        "ALTER TABLE series ADD COLUMN rev {BIGINT} NOT NULL DEFAULT 0",
        "DELETE FROM series_rollup WHERE level < 6",
    ],
    # 4: a point's W&B history row and its chart step are told apart.  A point is
    # keyed by (series_id, row_index), the history row (``_step``) it was logged
    # in, and carries ``step``, the x value it is charted against (a
    # define_metric step metric may repeat, go back or be fractional), as a
    # double.  Until now the two were one integer ``iteration``: it becomes both.
    # series keeps its row range (min_row/max_row, what rollups and the point
    # lookups work on) and gains the step range; rollup rows are indexed by row
    # (columns renamed to say so).  exporter_stats holds the latest health
    # counters each exporter process reported.
    [
        "DROP VIEW training_performance",
        """CREATE TABLE points_v4 (
            series_id {BIGINT} NOT NULL, row_index {BIGINT} NOT NULL, step {DOUBLE} NOT NULL,
            value {DOUBLE}, timestamp {DOUBLE} NOT NULL,
            PRIMARY KEY (series_id, row_index)
        ){NOROWID}""",
        """INSERT INTO points_v4 (series_id, row_index, step, value, timestamp)
           SELECT series_id, iteration, iteration, value, timestamp FROM points ORDER BY series_id, iteration""",
        "DROP TABLE points",
        "ALTER TABLE points_v4 RENAME TO points",
        "ALTER TABLE series RENAME COLUMN min_step TO min_row",
        "ALTER TABLE series RENAME COLUMN max_step TO max_row",
        "ALTER TABLE series ADD COLUMN min_step {DOUBLE} NOT NULL DEFAULT 0",
        "ALTER TABLE series ADD COLUMN max_step {DOUBLE} NOT NULL DEFAULT 0",
        "UPDATE series SET min_step = min_row, max_step = max_row",
        # 1 while every point's step is its row (no define_metric step): a downsampled
        # answer then needs no step lookup.  Never set back to 1.
        "ALTER TABLE series ADD COLUMN step_is_row {BIGINT} NOT NULL DEFAULT 1",
        "ALTER TABLE series_rollup RENAME COLUMN first_step TO first_row",
        "ALTER TABLE series_rollup RENAME COLUMN last_step TO last_row",
        "ALTER TABLE series_rollup RENAME COLUMN min_step TO min_row",
        "ALTER TABLE series_rollup RENAME COLUMN max_step TO max_row",
        """CREATE TABLE exporter_stats (
            workload_uid TEXT NOT NULL, pod_name TEXT NOT NULL, rank {BIGINT} NOT NULL,
            stats TEXT NOT NULL, reported_at {DOUBLE} NOT NULL,
            PRIMARY KEY (workload_uid, pod_name, rank)
        )""",
        # Same columns as before (iteration is the chart step, now a double) plus row_index.
        """CREATE VIEW training_performance AS
           SELECT s.workload_uid AS workload_uid, s.data_source AS data_source, s.metric_name AS metric_name,
                  s.rank AS rank, s.run_id AS run_id, p.step AS iteration, p.value AS value,
                  p.timestamp AS timestamp, p.row_index AS row_index
           FROM points p JOIN series s ON s.id = p.series_id""",
    ],
    # 5 (PostgreSQL only): room in every page for updated rows.  Every ingest request
    # rewrites the summary row of each series it writes, the pod's and the exporter's
    # row (a fleet of 1,000 ranks: ~12,000 row updates a second).  In full pages
    # each update put the new row version on another page and a new entry into every
    # index of the table (series has two, one of five text columns); with free
    # space in the page it is a HOT update (no index entries, old versions pruned
    # within the page).  Applies to pages written from now on; SQLite updates rows in place.
    [
        ("postgresql", "ALTER TABLE series SET (fillfactor = 50)"),
        ("postgresql", "ALTER TABLE pods SET (fillfactor = 50)"),
        ("postgresql", "ALTER TABLE exporter_stats SET (fillfactor = 50)"),
        ("postgresql", "ALTER TABLE workloads SET (fillfactor = 50)"),
    ],
    # 6: rollups keep closed blocks only (storage/rollup.py): the block of each level
    # that holds the series' last row is composed by queries and never read back.  The
    # rows earlier servers kept for those blocks are deleted, so the table holds the
    # same rows as if this layout had written it; the version also tells a server
    # that it is older than the database (it refuses to start: see _check_version).
    [
        """DELETE FROM series_rollup WHERE block = ((SELECT s.max_row FROM series s
               WHERE s.id = series_rollup.series_id) >> CAST(level AS INTEGER))""",
    ],
    # 7: rollup phases (storage/rollup.py): a series' blocks start at rows moved by its
    # phase, kept in has_rollup as phase + 1.  Rollups built before keep has_rollup = 1,
    # phase 0, their rows as they are: nothing to change.  The version tells an older
    # server, which would read every rollup as phase 0, that it must not open the database.
    [],
]


def statements(version: int, types: Dict[str, str]) -> List[str]:
    """The statements of migration ``version`` (1-based) for one database."""
    out = []
    for s in MIGRATIONS[version - 1]:
        if isinstance(s, tuple):
            if s[0] != types["KIND"]:
                continue
            s = s[1]
        out.append(s.format(**types))
    return out


LATEST = len(MIGRATIONS)


def check_version(have: int, where: str = "the database") -> None:
    """Refuse a database written by a newer server (its data may use a layout this
    code reads wrongly or writes over, e.g. rollups before and after migration 6)."""
    if have > LATEST:
        raise RuntimeError(f"{where} has schema version {have}, newer than this server's {LATEST}: "
                           "a newer primus-lens wrote it; upgrade this server (pip install -U ...) "
                           "or point it at another database")
