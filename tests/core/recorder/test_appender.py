"""The worker's fast path gives exactly the points of the slow path (wandb's rules, flatten, batching)."""

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primus_lens_wandb_exporter.core.config import Config
from primus_lens_wandb_exporter.core.hookspecs import hookimpl
from primus_lens_wandb_exporter.core.identity import load_identity
from primus_lens_wandb_exporter.core.registry import create_plugin_manager
from primus_lens_wandb_exporter.core.recorder import Recorder
from primus_lens_wandb_exporter.core.recorder.records import _DEFINE, _LOG, _SUMMARY, RECORD_WIDTH
from primus_lens_wandb_exporter.wire import Row


class Batches:
    """A third-party sink plugin: every batch's identity and wire dicts, in order."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def lens_report_metrics(self, batch):
        # As JSON text: 3 and 3.0 are equal in Python, not on the wire.
        self.seen.append(((batch.source, batch.run_id, batch.rank, len(batch)), batch.points,
                          json.dumps(batch.to_payload()["metrics"])))


class Run:
    """Stands for a W&B run object: the recorder only reads a few attributes."""

    def __init__(self, run_id):
        self.id = run_id
        self.project = "p"


def _recorder():
    sink = Batches()
    pm = create_plugin_manager(disabled=("*",))
    pm.register(sink, name="batches")
    rec = Recorder(Config(api_reporting=False, batch_size=10**6, flush_interval=60),
                   load_identity({"POD_NAME": "fast-0"}), pm)
    return rec, sink


def _replay(items, fast):
    """Feed ``items`` (flat records) to a recorder: the worker's drain (fast path on) or record by record."""
    rec, sink = _recorder()
    if fast:
        for item in items:
            rec._queue.extend(item)
        while rec._queue:
            rec._drain(rec._queue)
    else:
        for item in items:
            rec._handle(item)
    # Rows the fast path queued as they came (the batcher's Row entries).
    _replay.fast_rows = sum(type(entry) is Row for entries in rec._pending.values() for entry in entries)
    rec._emit_all()
    # The keys logged: the slow path adds them to history_keys, the fast path only to latest (what
    # the summary reads is the union, runs.py _on_summary).
    states = sorted(repr((s.run_id, s.rules.row, s.rules.last_row, s.rules.last_values,
                          sorted(s.history_keys | s.latest.keys())))
                    for s in rec._runs.values())
    return sink.seen, rec.counters.as_dict(), states


def _assert_same(items):
    slow = _replay(items, fast=False)
    fast = _replay(items, fast=True)
    assert fast == slow
    return fast


NAMES = ["loss", "acc", "lr", "a.b", "_runtime", "step", "epoch"]
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.booleans(),
                   st.dictionaries(st.sampled_from(["x", "y"]), st.floats(allow_nan=False), max_size=2))
logs = st.tuples(st.just("log"), st.dictionaries(st.sampled_from(NAMES), values, max_size=5),
                 st.one_of(st.none(), st.integers(0, 40)), st.one_of(st.none(), st.booleans()))
defines = st.tuples(st.just("define"), st.sampled_from(["loss", "acc", "a*", "*"]),
                    st.sampled_from([None, "epoch", "step"]), st.just(None))
summaries = st.tuples(st.just("summary"), st.dictionaries(st.sampled_from(["final", "loss"]), st.floats(0, 1),
                                                          min_size=1, max_size=2), st.just(None), st.just(None))
calls = st.lists(st.tuples(st.sampled_from([0, 1]), st.one_of(logs, logs, logs, defines, summaries)), max_size=40)


def _items(script):
    runs = [Run("r0"), Run("r1")]
    items = []
    for i, (which, (kind, data, step, commit)) in enumerate(script):
        ts = 1_700_000_000.0 + i * 0.001
        run = runs[which]
        if kind == "log":
            items.append((_LOG, run, dict(data), step, commit, ts))
        elif kind == "define":
            items.append((_DEFINE, run, (data, step, None, False), None, None, ts))
        else:
            items.append((_SUMMARY, run, dict(data), None, None, ts))
    assert all(len(item) == RECORD_WIDTH for item in items)
    return items


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls)
def test_fast_path_gives_the_points_the_slow_path_gives(script):
    _assert_same(_items(script))


def test_plain_float_logs_take_the_fast_path_and_match_the_slow_path():
    run = Run("plain")
    data = {f"metric_{i}": 0.1 * i for i in range(10)}
    items = [(_LOG, run, dict(data, metric_0=float(i)), None, None, 1_700_000_000.0 + i) for i in range(300)]
    # A non-finite value, an int, a step and a define_metric in between: each leaves the fast path.
    items[50] = (_LOG, run, dict(data, metric_1=math.nan), None, None, 1_700_000_050.0)
    items[60] = (_LOG, run, dict(data, metric_1=3), None, None, 1_700_000_060.0)
    items[70] = (_LOG, run, dict(data), 200, None, 1_700_000_070.0)
    items[280] = (_DEFINE, run, ("metric_*", "metric_0", None, False), None, None, 1_700_000_280.0)
    seen, counters, states = _assert_same(items)
    points = [p for _, batch_points, _ in seen for p in batch_points]
    # 299 calls, 298 rows: the call with step=200 and the next one share row 200.
    assert counters["points"] == len(points) == 298 * 10 and counters["log_calls"] == 299
    assert _replay.fast_rows > 250  # the plain calls took the fast path
    nan = [p for p in points if p["value"] == "NaN"]
    assert nan == [{"name": "metric_1", "value": "NaN", "step": 50, "timestamp": 1_700_000_050.0}]
    # After define_metric("metric_*", step_metric="metric_0"): charted by metric_0, row kept.
    last = [p for p in points if p["name"] == "metric_5"][-1]
    assert last == {"name": "metric_5", "value": 0.5, "step": 299.0, "timestamp": 1_700_000_299.0, "row": 427}


def test_a_chunk_of_only_plain_logs_is_queued_in_bulk_and_matches_the_slow_path(monkeypatch):
    bulk = []
    drain_plain = Recorder._drain_plain

    def counted(self, flat, count):
        bulk.append(drain_plain(self, flat, count))
        return bulk[-1]

    monkeypatch.setattr(Recorder, "_drain_plain", counted)
    run = Run("bulk")
    t0 = 1_700_000_000.0
    # Chunks of 256 records: the first creates the run (one by one); then the same keys every call,
    # keys that change from call to call, and a chunk with one NaN (checked one by one again).
    items = [(_LOG, run, {"loss": 1.0 / (i + 1), "lr": 0.5}, None, None, t0 + i) for i in range(512)]
    items += [(_LOG, run, {f"m{i % 3}": float(i), "loss": float(i)}, None, None, t0 + i) for i in range(512, 768)]
    items += [(_LOG, run, {"loss": math.nan if i == 900 else 2.0}, None, None, t0 + i) for i in range(768, 1024)]
    seen, counters, states = _assert_same(items)
    assert bulk == [False, True, True, False]
    assert counters["points"] == 512 * 2 + 256 * 2 + 256 and counters["log_calls"] == 1024


class _Ambiguous:
    """A step whose == raises (as a numpy array's truth value does)."""

    def __eq__(self, other):
        raise ValueError("the truth value is ambiguous")

    __hash__ = object.__hash__


def test_a_step_whose_equality_raises_does_not_break_the_bulk_check():
    run = Run("ambiguous")
    items = [(_LOG, run, {"loss": float(i)}, None, None, 1_700_000_000.0 + i) for i in range(300)]
    items[280] = (_LOG, run, {"loss": 1.0}, _Ambiguous(), None, 1_700_000_280.0)
    seen, counters, states = _assert_same(items)
    assert counters["worker_errors"] == 0 and counters["log_calls"] == 300
