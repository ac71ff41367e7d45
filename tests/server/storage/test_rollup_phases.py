"""Rollup phases: the series of a lockstep job close their rollup blocks at different rows.

The ranks of a data-parallel job log the same history row in the same second.  With the
same block boundaries for every series, every series of a fleet closed a base block in
the same second, once every 64 rows, and wrote its rollup row then: on PostgreSQL a
steady-state fleet's p99 was 138 / 165 ms with that second in the run, 14 / 24 ms without
(docs/capacity-log.md, "Ninth pass").  Each series' rollup now works on its rows moved by a phase (0..63) taken
from its key, so a fleet's block closes spread over the rows.  Rollups built before
phases existed (``has_rollup`` = 1) keep phase 0, so a database needs no rebuild.
"""

from __future__ import annotations

import math

from test_rollup_maintenance import T0, UID, _check

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store, rollup


def _send(store, rank, rows, metrics=4):
    series = {f"m{m}": {r: (math.sin(r / 7.0 + m + rank), T0 + r, float(r)) for r in rows} for m in range(metrics)}
    store.ingest([SeriesBatch(UID, "wandb", "run", rank, "", "", "", series)])


def test_a_lockstep_fleet_closes_its_blocks_spread_over_the_rows(db_url):
    ranks, metrics = 50, 4
    store = open_store(db_url)
    written = []
    real = store._write_rollup
    store._write_rollup = lambda cur, rows: (written.extend(rows), real(cur, rows))[1]
    try:
        for rank in range(ranks):
            _send(store, rank, range(300), metrics)
        per_row = {}
        for row in range(300, 300 + 2 * (1 << rollup.BASE_LEVEL)):  # every series closes two base blocks
            written.clear()
            for rank in range(ranks):  # one request per rank, all ranks at the same row
                _send(store, rank, [row], metrics)
            per_row[row] = len(written)
        with store.read_cursor() as cur:
            store._ex(cur, "SELECT has_rollup FROM series")
            phases = [r[0] - 1 for r in cur.fetchall()]
    finally:
        store.close()
    series = ranks * metrics
    assert len(phases) == series and min(phases) >= 0 and len(set(phases)) >= 40, sorted(set(phases))
    # Every series closed two base blocks (and some a level-7 block too) ...
    assert sum(per_row.values()) >= 2 * series
    # ... but no row closed more than a fraction of them: with one alignment for all,
    # rows 320 and 384 each closed every series' block (200 and 400 rollup rows).
    assert max(per_row.values()) <= series // 8, sorted(per_row.items(), key=lambda kv: -kv[1])[:5]


def test_phased_rollups_stay_exact_under_appends_and_rewrites(db_url):
    store = open_store(db_url)
    model = {}
    phases = []
    try:
        for lo, hi in [(0, 300), (300, 301), (301, 450), (450, 451), (451, 452), (452, 700)]:
            pts = {r: (math.cos(r / 11.0) * (1 + r % 5), T0 + r, float(r)) for r in range(lo, hi)}
            store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts, "lr": dict(pts)})])
            for name in ("loss", "lr"):
                model.setdefault(name, {}).update(pts)
            _check(store, model)
        # A re-sent stretch across block edges, with a new extreme: the rows it touched are rebuilt.
        pts = {r: (-1e6 if r == 333 else 2.0, T0 + r, float(r)) for r in range(320, 420)}
        store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts})])
        model["loss"].update(pts)
        _check(store, model, phases)
    finally:
        store.close()
    assert any(phases), phases  # the check covered moved rows (a phase other than 0)


def test_a_rollup_built_before_phases_keeps_phase_0(db_url, monkeypatch):
    # A database written before phases holds has_rollup = 1 and blocks aligned at row 0:
    # it must stay phase 0 (nothing is rebuilt), while a series rolled up now gets its phase.
    monkeypatch.setattr(rollup, "phase_of", lambda key: 0)
    store = open_store(db_url)
    model = {"old": {}}
    try:
        pts = {r: (float(r % 13), T0 + r, float(r)) for r in range(400)}
        store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"old": pts})])
        model["old"].update(pts)
    finally:
        store.close()
    monkeypatch.undo()
    store = open_store(db_url)  # a server of this version on that database
    try:
        for lo in range(400, 700, 37):
            pts = {r: (float(r % 17) - 3, T0 + r, float(r)) for r in range(lo, lo + 37)}
            store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"old": pts, "new": dict(pts)})])
            model["old"].update(pts)
            model.setdefault("new", {}).update(pts)
            _check(store, model)
        with store.read_cursor() as cur:
            store._ex(cur, "SELECT metric_name, has_rollup FROM series ORDER BY metric_name")
            has = dict(cur.fetchall())
    finally:
        store.close()
    assert has["old"] == 1
    assert has["new"] == rollup.phase_of((UID, "wandb", "new", 0, "run")) + 1


def test_a_phased_series_first_block_is_not_read_from_its_points(db_url):
    # With a phase, the first block of level k starts before row 0 (the phase moves row 0
    # to row `phase`).  No point lies there, so the block's stored row answers for it:
    # reading its raw points as if a filter cut it cost up to 2**k points a query.
    name = next(n for n in (f"loss{i}" for i in range(100)) if rollup.phase_of((UID, "wandb", n, 0, "run")))
    values = {r: (math.sin(r / 40.0) + (5.0 if r == 2500 else 0.0), T0 + r, float(r)) for r in range(5000)}
    store = open_store(db_url)
    read = []
    real = store._fetch_raw
    store._fetch_raw = lambda cur, sid, lo, hi, *a, **kw: (lambda pts: (read.append(len(pts)), pts)[1])(
        real(cur, sid, lo, hi, *a, **kw))
    try:
        store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {name: values})])
        read.clear()
        got = {p[6]: p[4] for p in store.data(UID, "wandb", metrics=[name], max_points=100)}
    finally:
        store.close()
    assert got[0] == values[0][0] and got[4999] == values[4999][0] and got[2500] == values[2500][0]
    assert all(got[r] == values[r][0] for r in got)
    assert sum(read) <= 1 << rollup.BASE_LEVEL, read  # the open base block's points only


def test_a_point_appended_to_a_phased_tail_is_moved_like_its_columns():
    # The common append (one point inside the open block) skips Columns.shifted: the tail
    # it makes must be the one the moved columns make, NaN, infinities and all.
    import random

    from test_rollup_maintenance import _same_rows, _value

    rnd = random.Random(5)
    compared = 0
    for shift in (0, 1, 37, 63):
        pts = [(r + shift, _value(rnd), T0 + r) for r in range(rollup.ROLLUP_MIN_POINTS + 3)]
        _, tail = rollup.full(9, pts, rollup.top_level(pts[-1][0]), pts[-1][0], 1)
        tail.shift = shift
        for _ in range(200):
            row = tail.max_step - shift + 1
            ts = rnd.choice([T0 + row, math.nan, math.inf]) if rnd.random() < 0.1 else T0 + row
            col = rollup.Columns({row: (_value(rnd), ts, float(row))})
            pts.append((row + shift, col.vals[0], col.tss[0]))
            if (row + shift) >> rollup.BASE_LEVEL != tail.block:  # past the open block: not this path
                _, tail = rollup.full(9, pts, rollup.top_level(pts[-1][0]), pts[-1][0], tail.rev + 1)
                tail.shift = shift
                continue
            want = tail.extended(col.shifted(shift), tail.rev + 1)
            got = tail.extended_point(row + shift, col, tail.rev + 1)
            assert (got.max_step, got.block, got.shift, got.rev) == (want.max_step, want.block, want.shift, want.rev)
            assert _same_rows(list(got.points), list(want.points))
            assert _same_rows([got.agg or ()], [want.agg or ()]), (shift, row, got.agg, want.agg)
            tail = got
            compared += 1
    assert compared > 600
