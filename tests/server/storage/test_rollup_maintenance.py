"""Rollups maintained batch by batch equal rollups built from scratch.

Ingest keeps each series' rollup rows up to date incrementally: appends reuse the
tail cached after the previous commit, other batches read the stored points and
sibling rows they need.  Here random histories (appends, gaps, jumps of many
levels, overwrites of old steps, NaN and infinities, a series that crosses the
rollup threshold late) go through a real database, and after every batch every
stored rollup row must equal what :func:`rollup.full_levels` computes from all
the series' points.  Only closed blocks are stored (the open block of each level,
holding the last row, is composed by the queries), so the stored rows must be
exactly the closed blocks, and every open block the queries compose must equal
the one built from scratch.  A second store on the same database writes in
between (like a second ``--workers`` process), which the cached tails must notice.
"""

from __future__ import annotations

import gc
import math
import random

import pytest

from primus_lens_wandb_exporter.server.storage import SeriesBatch, open_store, rollup

T0 = 1_700_000_000_000.0
UID = "wl-rollup"


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _stored_rows(store, name):
    """``(stored rows, {level: the open block the queries compose}, phase)`` of one series.

    The rollup works on the series' rows moved by its phase (``has_rollup - 1``)."""
    with store.read_cursor() as cur:
        store._ex(cur, "SELECT id, max_row, has_rollup FROM series WHERE workload_uid = ? AND metric_name = ?",
                  (UID, name))
        sid, max_row, has_rollup = cur.fetchone()
        o = max(0, has_rollup - 1)
        store._ex(cur, f"SELECT level, block, {', '.join(rollup_cols())} FROM series_rollup "
                       "WHERE series_id = ? ORDER BY level, block", (sid,))
        rows = {(r[0], r[1]): store._rollup_agg(r[2:]) for r in cur.fetchall()}
        composed = {lvl: store._open_block(cur, sid, lvl, max_row + o, o)
                    for lvl in range(rollup.BASE_LEVEL, rollup.top_level(max_row + o) + 1)}
        return rows, composed, o


def rollup_cols():
    from primus_lens_wandb_exporter.server.storage.model import ROLLUP_COLS

    return ROLLUP_COLS.split(", ")


def _check(store, model, phases=None):
    for name, pts in model.items():
        got, composed, o = _stored_rows(store, name)
        if len(pts) <= rollup.ROLLUP_MIN_POINTS:
            assert got == {}, name
            continue
        if phases is not None:
            phases.append(o)
        ordered = sorted((s + o, v, t) for s, (v, t, _) in pts.items())
        last = ordered[-1][0]
        every = {(lvl, b): agg for lvl, b, agg in rollup.full_levels(ordered, rollup.top_level(last))}
        want = {k: agg for k, agg in every.items() if k[1] < last >> k[0]}
        assert got.keys() == want.keys(), name
        for k, agg in want.items():
            assert all(_same(x, y) for x, y in zip(got[k], agg)), (name, k, got[k], agg)
        for lvl, agg in composed.items():
            full = every.get((lvl, last >> lvl))
            assert full is not None and all(_same(x, y) for x, y in zip(agg, full)), (name, lvl, agg, full)


def _value(rnd):
    r = rnd.random()
    if r < 0.02:
        return math.nan
    if r < 0.03:
        return rnd.choice([math.inf, -math.inf])
    return rnd.choice([rnd.uniform(-5, 5), float(rnd.randint(-3, 3))])  # ties between equal values too


def _next_batch(rnd, model, name):
    """Steps for the next batch of one series, drawn from the shapes real clients send."""
    pts = model.get(name, {})
    top = max(pts) if pts else -1
    shape = rnd.choice(["append", "append", "append", "gap", "jump", "overwrite", "straddle", "single", "shuffled"])
    if shape == "append" or not pts:
        steps = range(top + 1, top + 1 + rnd.randint(1, 700))
    elif shape == "gap":
        start = top + rnd.randint(2, 300)
        steps = range(start, start + rnd.randint(1, 200))
    elif shape == "jump":  # several new rollup levels at once
        start = top * rnd.randint(3, 40) + rnd.randint(1, 5000)
        steps = range(start, start + rnd.randint(1, 100))
    elif shape == "overwrite":
        steps = rnd.sample(sorted(pts), min(len(pts), rnd.randint(1, 50)))
    elif shape == "straddle":  # re-sends the end and goes on
        steps = range(max(0, top - rnd.randint(0, 100)), top + rnd.randint(1, 300))
    elif shape == "single":
        steps = [top + 1]
    else:
        steps = list(range(top + 1, top + 1 + rnd.randint(2, 300)))
        rnd.shuffle(steps)
    return {s: (_value(rnd), T0 + s * 10.0 + rnd.random(), s / 2 - 7) for s in steps}  # (value, ts, step)


@pytest.mark.parametrize("seed", range(4))
def test_incremental_rollups_equal_a_full_rebuild(db_url, seed):
    rnd = random.Random(seed)
    store = open_store(db_url)
    other = open_store(db_url)  # a second writer: another worker process or server
    model = {}
    try:
        for _ in range(60):
            name = rnd.choice(["loss", "lr", "grad_norm"])
            pts = _next_batch(rnd, model, name)
            writer = other if rnd.random() < 0.15 else store
            writer.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {name: pts})])
            model.setdefault(name, {}).update(pts)
            _check(store, model)
        # The appends mostly went through the cached tails: the test covers that path.
        assert store._tails._tails
    finally:
        store.close()
        other.close()


def test_stale_tail_of_another_writer_is_not_used(db_url):
    # Store a appends to a series and caches its tail.  Store b (another worker)
    # then rewrites points inside that tail without moving the series' end; a's
    # next append must notice (the series' rev moved on) and read instead.
    a, b = open_store(db_url), open_store(db_url)
    model = {"loss": {}}

    def send(store, pts):
        store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts})])
        model["loss"].update(pts)

    try:
        for i in range(10):
            send(a, {s: (float((s * 37) % 101), T0 + s, s) for s in range(i * 300, (i + 1) * 300)})
            if i in (4, 7):
                end = (i + 1) * 300 - 1
                # a new minimum in the last base block and in the block before it
                send(b, {end - 1: (-1e9 - i, T0 + end - 1, end - 1), end - 70: (1e9 + i, T0 + end - 70, end - 70)})
            _check(a, model)
    finally:
        a.close()
        b.close()


def test_appends_read_nothing_back(db_url):
    # The point of the cached tail: an append to a series this server wrote last
    # issues no read for its rollup (neither stored points nor sibling rows).
    store = open_store(db_url)
    reads = []
    for name in ("_fetch_raw_many", "_fetch_rollup_many"):
        real = getattr(store, name)
        setattr(store, name, lambda cur, requests, _real=real, _name=name: (reads.append((_name, list(requests))),
                                                                            _real(cur, requests))[1])
    model = {}
    try:
        for i in range(8):
            pts = {s: (math.sin(s / 30.0), T0 + s, s) for s in range(i * 450, (i + 1) * 450)}
            store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts, "lr": dict(pts)})])
            for name in ("loss", "lr"):
                model.setdefault(name, {}).update(pts)
        assert reads and all(req == [] for _, req in reads), reads
        _check(store, model)
    finally:
        store.close()


def test_a_tail_missing_a_needed_block_is_not_used():
    blocks = {(rollup.BASE_LEVEL, 5): (1,) * 16}
    tail = rollup.Tail(7, 3, 5 << rollup.BASE_LEVEL, ([], [], []), blocks)
    lvl = rollup.BASE_LEVEL
    assert tail.covers(3, tail.max_step, [], {lvl: [5]})
    assert tail.covers(3, tail.max_step, [], {lvl: [9]})            # past the series' end: empty
    assert not tail.covers(3, tail.max_step, [], {lvl: [4]})        # stored, but not in the tail
    assert not tail.covers(4, tail.max_step, [], {lvl: [5]})        # another writer moved rev on
    assert not tail.covers(3, tail.max_step + 1, [], {})            # another end of the series
    assert not tail.covers(3, tail.max_step, [tail.block - 1], {})  # a stored block it lacks


def _same_rows(a, b) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(map(_same, x, y)) for x, y in zip(a, b))


@pytest.mark.parametrize("seed", range(3))
def test_one_point_append_equals_the_general_update(seed):
    # Tail.append_one (an exporter's request: one point per metric, past the last
    # row) combines the stored block with the point instead of re-aggregating the
    # block's stored points.  Its rows and next tail must be what the general
    # update computes, across block and level boundaries, row gaps, NaN, infinities
    # and ties (the first point of the smallest/largest value is the one kept).
    # The tail carries its open base block's aggregate from point to point
    # (Tail.agg), so a closing block is not re-aggregated: the rows compared here
    # are built from it, and it must equal the aggregate of the tail's points.
    rnd = random.Random(seed)
    pts = sorted((s, _value(rnd), T0 + s) for s in range(rollup.ROLLUP_MIN_POINTS + rnd.randint(1, 200)))
    _, tail = rollup.full(9, pts, rollup.top_level(pts[-1][0]), pts[-1][0], 1)
    fast = general = closed_from_carried = 0
    for _ in range(600):
        row = tail.max_step + (1 if rnd.random() < 0.9 else rnd.randint(2, 150))
        col = rollup.Columns({row: (_value(rnd), T0 + row + rnd.choice([0.0, -5.0]), float(row))})
        top, old_top, stored, needs = col.touch(tail.max_step)
        want = rollup.update(tail.sid, col, top, old_top, row, stored, {tail.block: tail.points} if stored else {},
                             tail.blocks, tail.rev + 1)
        got = tail.append_one(col, top, tail.rev + 1) if top == old_top else None
        assert _same_rows([want[1].agg], [rollup.aggregate(list(zip(*want[1].points)))]), (row, want[1].agg)
        if got is None:
            general += 1
            tail = want[1]
            continue
        fast += 1
        closed_from_carried += bool(got[0]) and tail.agg is not None
        assert _same_rows(got[0], want[0]), (row, got[0], want[0])
        g, w = got[1], want[1]
        assert (g.sid, g.rev, g.max_step, g.block) == (w.sid, w.rev, w.max_step, w.block)
        assert _same_rows(list(g.points), list(w.points))
        assert g.blocks.keys() == w.blocks.keys()
        assert all(_same_rows([g.blocks[k] or ()], [w.blocks[k] or ()]) for k in w.blocks)
        if g.agg is not None:
            assert _same_rows([g.agg], [rollup.aggregate(list(zip(*g.points)))]), (row, g.agg)
        tail = g
    assert fast > 500 and general >= 1  # both paths ran (a new top level takes the general one)
    assert closed_from_carried >= 3  # blocks closed from a carried aggregate (600 rows: ~9 closes)


def test_tail_points_hold_no_objects_for_the_collector_to_traverse():
    # A 1,000-rank fleet replaces ~10,000 tails a second; held as lists, every point of
    # them was traversed by the cyclic collector's young-generation passes (15-45 ms
    # pauses of the whole server).  Whatever path built a tail, its points are arrays.
    pts = [(s, s * 0.5, T0 + s) for s in range(rollup.ROLLUP_MIN_POINTS + 10)]
    _, tail = rollup.full(9, pts, rollup.top_level(pts[-1][0]), pts[-1][0], 1)
    tails = [tail]
    for _ in range(2 << rollup.BASE_LEVEL):  # across block boundaries: append_one's tails too
        row = tails[-1].max_step + 1
        col = rollup.Columns({row: (row * 0.25, T0 + row, float(row))})
        top, old_top, stored, needs = col.touch(tails[-1].max_step)
        got = tails[-1].append_one(col, top, tails[-1].rev + 1) if top == old_top else None
        tails.append(got[1] if got is not None else
                     rollup.update(9, col, top, old_top, row, stored, {tails[-1].block: tails[-1].points},
                                   tails[-1].blocks, tails[-1].rev + 1)[1])
    for t in tails:
        assert len(t.points[0]) >= 1
        held = [r for column in t.points for r in gc.get_referents(column) if not isinstance(r, type)]
        assert held == [], (t.max_step, held[:3])


def test_migration_6_deletes_the_rows_of_open_blocks(db_url, monkeypatch):
    # Servers before the closed-block layout stored a row for every level's open
    # block.  Migration 6 deletes them (and only them): afterwards the table holds
    # exactly what this layout writes.  Such a server had no phases: phase 0.
    monkeypatch.setattr(rollup, "phase_of", lambda key: 0)
    store = open_store(db_url)
    pts = {s: (math.sin(s / 9.0), T0 + s, s) for s in range(1000)}
    model = {"loss": dict(pts)}
    try:
        store.ingest([SeriesBatch(UID, "wandb", "run", 0, "", "", "", {"loss": pts})])
        cols = rollup_cols()
        with store.write_tx() as cur:
            store._ex(cur, "SELECT id FROM series WHERE metric_name = 'loss'")
            sid = cur.fetchone()[0]
            for lvl in range(rollup.BASE_LEVEL, rollup.top_level(999) + 1):  # what an older server kept
                store._ex(cur, f"INSERT INTO series_rollup (series_id, level, block, {', '.join(cols)}) "
                               f"VALUES ({', '.join('?' * (3 + len(cols)))})",
                          (sid, lvl, 999 >> lvl) + (1, 0) + (999, -5.0, T0) * 2 + (999, -5.0, T0) * 2 + (T0, T0))
            store._ex(cur, "DELETE FROM schema_version WHERE version >= 6")  # as if written before 6
    finally:
        store.close()
    store = open_store(db_url)  # runs migration 6 (and any later one) again
    try:
        _check(store, model)  # fails with the old rows left: stored rows must be the closed blocks only
    finally:
        store.close()


def test_a_database_of_a_newer_server_is_refused(db_url):
    from primus_lens_wandb_exporter.server.storage import schema

    store = open_store(db_url)
    try:
        with store.write_tx() as cur:
            store._ex(cur, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (schema.LATEST + 1, 0.0))
    finally:
        store.close()
    with pytest.raises(RuntimeError, match="newer than this server"):
        open_store(db_url)
