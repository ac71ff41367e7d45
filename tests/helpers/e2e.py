"""Shared pieces of the Lightning / HF Trainer end-to-end tests: one real Lens server per
module, and readers for what it stored and what the local JSONL sink wrote."""

import collections
import json
import os
import uuid
from pathlib import Path

import pytest

from helpers.server import LensServer
from helpers.exporter import get_json, metric_points, wait_for, workload


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """One real Lens server (SQLite) for the whole module; each test uses its own workload."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    directory = tmp_path_factory.mktemp("lens-server")
    server = LensServer(f"sqlite:///{directory}/lens.db", Path(directory) / "server.log").start()
    yield server
    server.stop()


def new_workload(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sources(server, uid):
    body = get_json(server, f"/api/v1/workloads/{uid}/metrics/sources")
    return {s["name"]: s["count"] for s in body["data_sources"]}


def detection_of(server, uid, wrapper, timeout=30):
    """The workload's detection once the server has one naming ``wrapper`` exactly."""
    def ready():
        det = (workload(server, uid) or {}).get("detection") or {}
        return det if det.get("wrapper") == wrapper and det.get("method") == "exact" else None

    det = wait_for(ready, timeout=timeout)
    assert det, f"no exact detection of {wrapper}: {workload(server, uid).get('detection')}"
    return det


def points_of(server, uid, data_source, expected_count, timeout=30):
    """All points of one data source, once at least ``expected_count`` arrived."""
    def ready():
        pts = metric_points(server, uid, data_source=data_source)
        return pts if len(pts) >= expected_count else None

    pts = wait_for(ready, timeout=timeout)
    return pts or metric_points(server, uid, data_source=data_source)


def points_with(server, uid, data_source, names, timeout=30):
    """All points of one data source, once every metric in ``names`` has arrived."""
    def ready():
        pts = metric_points(server, uid, data_source=data_source)
        return pts if set(names) <= {p["metric_name"] for p in pts} else None

    return wait_for(ready, timeout=timeout) or metric_points(server, uid, data_source=data_source)


def by_name(points):
    """{metric name: {step: value}} of server points: the value of the last W&B row at each step.

    Several W&B rows can share a step (Lightning/HF log ``epoch`` in the train row and again
    in the validation row of the same global step): Lens keeps each row (``row``), and a
    framework's own record keyed by step holds the last. One point per (name, row) is asserted.
    """
    out = collections.defaultdict(dict)
    rows = collections.defaultdict(dict)
    seen = set()
    for p in points:
        row = p.get("row", p["iteration"])
        assert (p["metric_name"], row) not in seen, f"duplicate point {p}"
        seen.add((p["metric_name"], row))
        name, step = p["metric_name"], p["iteration"]
        if step not in rows[name] or row > rows[name][step]:
            rows[name][step] = row
            out[name][step] = p["value"]
    return dict(out)


def jsonl_rows(output_path):
    """Every point the exporter emitted (the local JSONL sink writes each one as it is sent)."""
    rows = []
    for root, _dirs, files in os.walk(output_path):
        for name in files:
            if name == "wandb_metrics.jsonl":
                with open(os.path.join(root, name), encoding="utf-8") as fh:
                    rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


def assert_each_point_emitted_once(rows):
    """No (source, name, step, rank) was emitted twice."""
    keys = collections.Counter((r["source"], r["name"], r["step"], r["rank"]) for r in rows)
    doubled = {k: n for k, n in keys.items() if n > 1}
    assert not doubled, f"points emitted more than once: {doubled}"


def emitted(rows, source):
    """Counter of (name, step) the exporter emitted for ``source``."""
    return collections.Counter((r["name"], r["step"]) for r in rows if r["source"] == source)


def assert_emitted_exactly(rows, source, expected):
    """Each (name, step) was emitted exactly as many times as the framework logged it."""
    got = emitted(rows, source)
    expected = collections.Counter(expected)
    missing = expected - got
    extra = got - expected
    assert not missing and not extra, f"{source}: missing {dict(missing)}, extra {dict(extra)}"


def assert_close(actual, expected, what):
    assert set(actual) == set(expected), f"{what}: steps {sorted(actual)} != {sorted(expected)}"
    for step, value in expected.items():
        assert actual[step] == pytest.approx(value, rel=1e-6, abs=1e-9), f"{what} at step {step}"


def mirrored_points(server, uid, expected, timeout=30, **where):
    """Lens's copy of one W&B run in ``wandb_oracle``'s shape ({(name, row): (step, value)}),
    once at least as many points as W&B recorded have arrived (after ``timeout`` whatever is
    there: the comparison then names what is missing). ``where``: ``run_id``, ``rank``."""
    from helpers.wandb_oracle import lens_points

    def ready():
        points = lens_points(server, uid, **where)
        return points if len(points) >= len(expected) else None

    return wait_for(ready, timeout=timeout) or lens_points(server, uid, **where)


def rows_sharing_a_step(expected):
    """{(name, step): [rows]} of the series where W&B holds several rows at one step value:
    the case a (name, step) key would collapse."""
    rows = collections.defaultdict(list)
    for (name, row), (step, _value) in expected.items():
        rows[(name, step)].append(row)
    return {key: sorted(r) for key, r in rows.items() if len(r) > 1}
