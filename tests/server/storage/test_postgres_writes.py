"""PostgreSQL: a group commit writes each table with one statement from array parameters
sent as array text (``postgres._array``), and the tables every request rewrites leave
room for HOT updates (migration 5).

The array text is built by hand (psycopg's list dumper cost ~1 us a value), so every
value must come back exactly: strings with the characters the array syntax gives a
meaning to, NULL, non-ASCII; floats with NaN, infinities, -0.0 and the extremes.
"""

from __future__ import annotations

import math
import os

import pytest
from helpers.server import PG_DSN_ENV, create_pg_database, drop_pg_database

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not os.environ.get(PG_DSN_ENV), reason=f"{PG_DSN_ENV} is not set")]

ODD = ['a', 'b"c', 'd\\e', '', 'NULL', 'null', 'x,y', ' sp ', '{}', '{"a": [1, 2]}', 'ü€😀', "it's", '\\"', '"',
       '\\', 'a\nb\tc']


@pytest.fixture
def store():
    url = create_pg_database()
    s = open_store(url)
    yield s
    s.close()
    drop_pg_database(url)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def test_array_text_round_trips(store):
    from primus_lens_wandb_exporter.server.storage.postgres import _array

    floats = [1.5, math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 0.1, None, 123456789012345.678, 1 / 3]
    ints = [0, -1, 2**63 - 1, -2**63, None, 7]
    with store.read_cursor() as cur:
        cur.execute("SELECT %s::text[], %s::float8[], %s::bigint[]",
                    (_array(ODD + [None], "text"), _array(floats, "float8"), _array(ints, "bigint")))
        text, fl, it = cur.fetchone()
    assert text == ODD + [None]
    assert len(fl) == len(floats) and all((a is None and b is None) or _same(a, b) for a, b in zip(fl, floats))
    assert it == ints


def test_group_commit_stores_odd_strings_exactly(store):
    # Pods, exporter counters and series of many requests go in as one statement each.
    parts = []
    for i, name in enumerate(ODD):
        b = SeriesBatch("wl-" + name, "wandb", "run-" + name, i, "pod-" + name, "uid-" + name, "ns-" + name,
                        {"m/" + name: {0: (0.5 * i, 1e12 + i, 0.0)}}, exporter={"spooled_points": i})
        parts.append(([b], [], []))
    results = store.ingest_many(parts)
    assert [(r.count, r.inserted) for r in results] == [(1, 1)] * len(ODD)
    # The second group updates every row (one UPDATE of all summaries, one upsert per table).
    parts = [([SeriesBatch(b.workload_uid, b.source, b.run_id, b.rank, b.pod_name, "", "", {k: {1: (2.0, 2e12, 1.0)}
                                                                                        for k in b.series},
                           exporter={"spooled_points": 100 + b.rank})], [], []) for (b,), _, _ in parts]
    assert [(r.count, r.inserted) for r in store.ingest_many(parts)] == [(1, 1)] * len(ODD)
    with store.read_cursor() as cur:
        cur.execute("SELECT workload_uid, pod_name, pod_uid, namespace FROM pods ORDER BY workload_uid")
        pods = cur.fetchall()
        cur.execute("SELECT workload_uid, pod_name, rank, stats FROM exporter_stats ORDER BY workload_uid")
        stats = cur.fetchall()
        cur.execute("SELECT workload_uid, metric_name, run_id, count, min_row, max_row, rev FROM series "
                    "ORDER BY workload_uid")
        series = cur.fetchall()
    by = sorted(ODD, key=lambda n: "wl-" + n)
    assert [p[0] for p in pods] == ["wl-" + n for n in by]
    assert pods == [("wl-" + n, "pod-" + n, "uid-" + n, "ns-" + n) for n in by]  # '' kept the first uid/namespace
    assert [(s[0], s[1], s[2]) for s in stats] == [("wl-" + n, "pod-" + n, ODD.index(n)) for n in by]
    assert all('"spooled_points":%d' % (100 + s[2]) in s[3].replace(" ", "") for s in stats)
    assert series == [("wl-" + n, "m/" + n, "run-" + n, 2, 0, 1, 1) for n in by]


def test_rewritten_tables_leave_room_for_hot_updates(store):
    with store.read_cursor() as cur:
        cur.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                    "('series', 'pods', 'exporter_stats', 'workloads') ORDER BY relname")
        assert cur.fetchall() == [(t, ["fillfactor=50"]) for t in ("exporter_stats", "pods", "series", "workloads")]
