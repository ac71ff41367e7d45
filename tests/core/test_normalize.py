"""Bad input never raises into user code and never produces invalid JSON on the wire."""

import gc
import json
import math
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primus_lens_wandb_exporter.core import normalize
from primus_lens_wandb_exporter.core.config import Config
from primus_lens_wandb_exporter.core.hookspecs import hookimpl
from primus_lens_wandb_exporter.core.identity import load_identity
from primus_lens_wandb_exporter.core.registry import create_plugin_manager
from primus_lens_wandb_exporter.core.recorder import Recorder

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**400, max_value=10**400),
    st.booleans(), st.none(), st.text(max_size=20), st.binary(max_size=5), st.lists(st.floats(), max_size=3),
    st.builds(np.float32, st.floats(width=32)), st.builds(np.int64, st.integers(-2**63, 2**63 - 1)),
    st.builds(lambda v: torch.tensor(v), st.floats(allow_nan=True)),
    st.builds(lambda v: torch.tensor([v, v]), st.floats()), st.complex_numbers(max_magnitude=10),
    st.builds(lambda: object()), st.builds(lambda v: np.array(v), st.floats()),
)
names = st.one_of(st.text(max_size=30), st.just(""), st.just("x" * 600), st.integers(), st.just("step"),
                  st.just("_runtime"), st.just("_primus_sys_cpu_percent"), st.tuples(st.integers()))
nested = st.recursive(scalars, lambda children: st.dictionaries(names, children, max_size=4), max_leaves=25)
payloads = st.dictionaries(names, nested, max_size=8)


class CollectingSink:
    """A real third-party sink plugin: keeps every wire payload it is handed."""

    def __init__(self):
        self.bodies = []

    @hookimpl
    def lens_report_metrics(self, batch):
        # What the HTTP sink would send: it must be strict JSON.
        self.bodies.append(json.dumps(batch.to_payload(), allow_nan=False))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_flatten_never_raises_and_every_point_is_a_named_float(data):
    points, filtered = normalize.flatten(data)
    for name, value in points:
        assert isinstance(name, str) and 0 < len(name) <= normalize.MAX_NAME_LENGTH
        assert isinstance(value, float)
        assert name.split(".")[0] not in normalize.RESERVED_NAMES
    for name, reason in filtered:
        assert isinstance(name, str) and isinstance(reason, str) and reason


@pytest.fixture(scope="module")
def recorder():
    sink = CollectingSink()
    pm = create_plugin_manager(disabled=("*",))
    pm.register(sink, name="collector")
    rec = Recorder(Config(api_reporting=False, batch_size=50, flush_interval=0.05), load_identity({"POD_NAME": "n-0"}), pm)
    rec.sink = sink
    return rec


class FakeRun:
    """Stands for a W&B run object: the recorder only reads a few attributes."""
    id = "hypo"
    project = "p"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(payloads, st.one_of(st.none(), st.integers(0, 10**6)), st.one_of(st.none(), st.booleans()))
def test_any_logged_dict_reaches_sinks_as_strict_json(recorder, data, step, commit):
    recorder.log(FakeRun, data, step, commit)
    assert recorder.flush(5)
    assert recorder.counters.worker_errors == 0
    for body in recorder.sink.bodies:
        json.loads(body)  # parses: strict JSON, non-finite values as strings


def test_non_finite_values_travel_as_the_strings_lens_understands():
    assert [normalize.wire_value(v) for v in (math.nan, math.inf, -math.inf, 1.5)] == ["NaN", "Infinity", "-Infinity", 1.5]


def test_reserved_and_internal_names_are_filtered_but_ours_are_kept():
    points, filtered = normalize.flatten({"step": 1, "run_id": 2, "_timestamp": 3, "_primus_gpu_0_util": 4.0,
                                          "history": 5, "loss": 6})
    assert [n for n, _ in points] == ["_primus_gpu_0_util", "loss"]
    assert {n for n, _ in filtered} == {"step", "run_id", "_timestamp", "history"}


def test_a_tensor_changed_after_log_is_recorded_with_its_value_at_log_time():
    t = torch.tensor(1.0)
    frozen = normalize.snapshot({"t": t, "n": {"t": t}})
    t.add_(5)
    points, _ = normalize.flatten(frozen)
    assert dict(points) == {"t": 1.0, "n.t": 1.0}


def test_freeze_keeps_every_value_as_it_was_at_log_time():
    t = torch.tensor(1.0)
    inner = {"v": 1.0}
    plain = {"a": 1.0, "b": 2}
    mixed = {"t": t, "n": inner, "f": 0.5}
    frozen_plain, frozen_mixed = normalize.freeze(plain), normalize.freeze(mixed)
    plain["a"] = 9.0
    t.add_(5)
    inner["v"] = 9.0
    assert frozen_plain == {"a": 1.0, "b": 2}
    assert dict(normalize.flatten(frozen_mixed)[0]) == {"t": 1.0, "n.v": 1.0, "f": 0.5}


def test_freeze_copies_a_dict_that_once_held_a_tensor_and_now_holds_numbers():
    # CPython never untracks a dict: the sum() check must still take the plain-copy path.
    data = {"t": torch.tensor(1.0)}
    data["t"] = 2.0
    assert gc.is_tracked(data)
    frozen = normalize.freeze(data)
    data["t"] = 3.0
    assert frozen == {"t": 2.0} and type(frozen["t"]) is float


class PointSink:
    """Keeps (rank, name, step, value) of every point it is handed."""

    def __init__(self):
        self.points = []

    @hookimpl
    def lens_report_metrics(self, batch):
        self.points.extend((batch.rank, p["name"], p["step"], p["value"]) for p in batch.points)


def test_records_from_many_threads_never_mix_their_fields():
    # Each record is queued flat by one deque.extend(); were it several appends, a thread
    # switch in between would give one thread's values another thread's rank or step.
    sink = PointSink()
    pm = create_plugin_manager(disabled=("*",))
    pm.register(sink, name="points")
    rec = Recorder(Config(api_reporting=False, batch_size=500, flush_interval=0.05),
                   load_identity({"POD_NAME": "mix-0"}), pm)
    threads, calls = 4, 3000

    def produce(rank):
        for i in range(calls):
            rec.record({f"m{rank}": rank * 100_000 + i}, step=i, rank=rank)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        workers = [threading.Thread(target=produce, args=(r,)) for r in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)
    assert rec.flush(30)
    assert rec.counters.worker_errors == 0
    expected = {(r, f"m{r}", i, float(r * 100_000 + i)) for r in range(threads) for i in range(calls)}
    assert len(sink.points) == len(expected) and set(sink.points) == expected


def test_weird_values_through_real_wandb_never_raise_in_user_code(tmp_path):
    from helpers.exporter import exporter_env, run_python

    code = """
import math, numpy as np, torch, wandb
wandb.init(project="p")
weird = [{"": 1}, {"x" * 10000: 1}, {"a": {"b": {"c": {"d": math.nan}}}}, {"big": 10**400}, {"c": 1j},
         {"arr": np.ones(3)}, {"t": torch.ones(2)}, {"o": object()}, {"s": b"bytes"}, {"neg0": -0.0},
         {"n": None}, {"l": [1, 2]}, {"h": wandb.Histogram([1, 2, 3])}]
for row in weird:
    wandb.log(row)
try:
    wandb.log({1: 2})          # wandb itself rejects non-string keys: that error is wandb's, unchanged
except TypeError as exc:
    print("wandb says:", exc)
wandb.finish()
print("survived")
"""
    env = exporter_env(None, tmp_path, "weird", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_API_REPORTING="false",
                       PRIMUS_LENS_WANDB_OUTPUT_PATH=str(tmp_path / "out"), PRIMUS_LENS_WANDB_DEBUG="true")
    proc = run_python(code, env)
    assert "survived" in proc.stdout
    lines = (tmp_path / "out" / "node_0" / "rank_0" / "wandb_metrics.jsonl").read_text().splitlines()
    stored = {json.loads(l)["name"]: json.loads(l)["value"] for l in lines}
    assert stored == {"a.b.c.d": "NaN", "neg0": -0.0}
    # Every filtered name is explained once in the debug log.
    assert "filtered 'big'" in proc.stderr and "filtered 'arr'" in proc.stderr and "filtered ''" in proc.stderr
