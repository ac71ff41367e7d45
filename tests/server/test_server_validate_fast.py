"""The msgspec fast path of /wandb/metrics agrees with the full validator.

``validate.metrics_batch_bytes`` first tries msgspec on the raw body and falls back to
``metrics_batch(orjson.loads(raw))`` for anything it does not accept.  The fast path
must never accept a body the full validator rejects, and what it builds must be what
the full validator builds; the errors users see always come from the full validator,
which refuses a bad point alone (listed in ``rejected``) and keeps the others, so a
body with any refused point must take the full path.
"""

import json
import math
from dataclasses import asdict

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primus_lens_wandb_exporter.server import validate
from primus_lens_wandb_exporter.server.errors import ApiError

NOW = 1_764_000_000.0

# Well-formed bodies (the common case), each possibly broken in one field by one of the
# values the validator rejects or treats specially.
good_names = st.one_of(st.sampled_from(["loss", "train/acc", "a" * 512]), st.text(min_size=1, max_size=6))
good_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**70, 2**70),
                        st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"]))
good_steps = st.one_of(st.integers(0, 2**63 - 1), st.integers(-2**63, 2**63),
                       st.floats(-2e19, 2e19, allow_nan=False, allow_infinity=False))
good_rows = st.integers(0, 2**63 - 1)
good_stamps = st.one_of(st.floats(0, 1e14, exclude_max=True), st.integers(0, 10**14 - 1))
good_ids = st.text(max_size=8)
good_ranks = st.integers(0, 2**31 - 1)
point = st.fixed_dictionaries({"name": good_names, "value": good_values},
                              optional={"step": good_steps, "row": good_rows, "timestamp": good_stamps,
                                        "extra": st.integers()})
row = st.fixed_dictionaries({"values": st.dictionaries(good_names, good_values, max_size=4)},
                            optional={"step": good_steps, "row": good_rows, "timestamp": good_stamps,
                                      "extra": st.integers()})
good_body = st.fixed_dictionaries(
    {"workload_uid": st.sampled_from(["wl-1", "w" * 256]), "timestamp": good_stamps,
     "metrics": st.lists(point, max_size=8)},
    optional={"rows": st.lists(row, max_size=4), "source": st.sampled_from(["wandb", "", "s" * 512]), "run_id": good_ids, "rank": good_ranks,
              "local_rank": good_ranks, "node_rank": good_ranks, "world_size": good_ranks, "batch_id": good_ids,
              "pod_name": good_ids, "pod_uid": good_ids, "namespace": good_ids,
              "exporter": st.one_of(st.dictionaries(st.sampled_from(["queue_dropped", "", "x\x00"]),
                                                    st.one_of(st.integers(-5, 2**64), st.booleans(), st.floats())),
                                    st.integers(), st.none())})
BAD = {
    "name": ["", "a" * 513, "x\x00y", 3, None],
    "value": ["1.5", "", True, None, [1]],
    "step": [-1, 2**63, 2**64, 3.0, 2.5, -0.5, 1e300, None, True, "7"],
    "row": [-1, 2**63, 3.0, 2.5, None, True, "7"],
    "timestamp": [-1.0, 1e14, 2 * 10**14, None, "now", True],
    "workload_uid": ["", "u" * 257, "u\x00", 7, None],
    "source": ["s" * 513, 5, None], "run_id": ["r" * 257, 1], "rank": [-1, 2**31, 2.0, True, None, "0"],
    "world_size": [-1, 1.0], "pod_name": ["p" * 257, "p\x00"], "metrics": [None, {"not": "a list"}, "x"],
    "rows": [None, {"not": "a list"}, "x", [None], [[1]], [{"values": None}], [{"values": [1]}], [{}]],
}
#: What a row's ``values`` can hold that is refused (a name is a JSON key: always a string).
BAD_VALUES = {"name": ["", "a" * 513, "x\x00y"], "value": ["1.5", "", True, None, [1]]}


@st.composite
def bodies(draw):
    body = draw(good_body)
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(BAD)))
        bad = draw(st.sampled_from(BAD[field]))
        rows = [r for r in body.get("rows") or () if isinstance(r, dict)]
        if field in ("name", "value", "step", "row", "timestamp") and body["metrics"] and draw(st.booleans()):
            body["metrics"][draw(st.integers(0, len(body["metrics"]) - 1))][field] = bad
        elif field in ("step", "row", "timestamp") and rows and draw(st.booleans()):
            draw(st.sampled_from(rows))[field] = bad
        elif field in BAD_VALUES and rows and draw(st.booleans()):
            values = draw(st.sampled_from(rows))["values"]
            if field == "name":
                values[draw(st.sampled_from(BAD_VALUES["name"]))] = 1.0
            else:
                values[draw(good_names)] = draw(st.sampled_from(BAD_VALUES["value"]))
        elif field not in ("name", "value", "step", "row", "timestamp"):
            body[field] = bad
    return body


def full(raw):
    return validate.metrics_batch(orjson.loads(raw))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_fast_path_accepts_only_what_the_validator_accepts_and_builds_the_same_batch(body):
    if body.get("timestamp") is None:
        body["timestamp"] = NOW  # the default time is read separately by each path
    raw = json.dumps(body).encode()  # the stdlib writes integers beyond 64 bits too
    fast = validate._fast_metrics_batch(raw)
    try:
        expected = full(raw)
    except (ApiError, orjson.JSONDecodeError):
        assert fast is None
        return
    if expected.rejected_count:
        assert fast is None  # the refused points are named by the full validator only
    if fast is not None:
        got, want = asdict(fast), asdict(expected)
        assert _nan_safe(got) == _nan_safe(want)


def _nan_safe(batch):
    # NaN != NaN: compare its spelling instead.
    batch["series"] = {name: {step: tuple("NaN" if isinstance(x, float) and math.isnan(x) else x for x in pair)
                              for step, pair in pts.items()} for name, pts in batch["series"].items()}
    return batch


def test_a_plain_batch_takes_the_fast_path_with_every_point():
    pts = [{"name": f"m{m}", "value": s / 7, "step": s, "timestamp": NOW + s} for s in range(50) for m in range(3)]
    pts.append({"name": "m0", "value": "NaN", "step": 50})
    raw = orjson.dumps({"workload_uid": "wl", "rank": 2, "run_id": "r", "timestamp": NOW, "metrics": pts})
    batch = validate._fast_metrics_batch(raw)
    assert batch is not None and batch.rank == 2 and batch.run_id == "r" and batch.source == "wandb"
    assert sorted(batch.series) == ["m0", "m1", "m2"] and len(batch.series["m0"]) == 51
    assert batch.series["m1"][7] == (pytest.approx(1.0), (NOW + 7) * 1000.0, 7.0)
    assert math.isnan(batch.series["m0"][50][0]) and batch.series["m0"][50][1] == NOW * 1000.0


def test_rows_and_fractional_steps_take_the_fast_path():
    pts = [{"name": "eval/loss", "value": 0.5, "step": 3, "row": 117},
           {"name": "eval/loss", "value": 0.4, "step": 3, "row": 118},
           {"name": "lr", "value": 0.1, "step": -2.5, "row": 4}, {"name": "acc", "value": 1.0, "row": 9}]
    raw = orjson.dumps({"workload_uid": "wl", "timestamp": NOW, "metrics": pts, "exporter": {"queue_dropped": 2}})
    batch = validate._fast_metrics_batch(raw)
    assert batch is not None and batch == full(raw)
    assert batch.series == {"eval/loss": {117: (0.5, NOW * 1000.0, 3.0), 118: (0.4, NOW * 1000.0, 3.0)},
                            "lr": {4: (0.1, NOW * 1000.0, -2.5)}, "acc": {9: (1.0, NOW * 1000.0, 9.0)}}
    assert batch.exporter == {"queue_dropped": 2}


@pytest.mark.parametrize("point, field", [
    ({"name": "x\x00y", "value": 1.0}, "metrics[1].name"),
    ({"name": "x" * 600, "value": 1.0}, "metrics[1].name"),
    ({"name": "loss", "value": "fast"}, "metrics[1].value"),
    ({"name": "loss", "value": 1.0, "step": -1}, "metrics[1].row"),
    ({"name": "loss", "value": 1.0, "step": 0.5}, "metrics[1].row"),
    ({"name": "loss", "value": 1.0, "step": 1e300, "row": 1}, "metrics[1].step"),
    ({"name": "loss", "value": 1.0, "row": -1}, "metrics[1].row"),
    ({"name": "loss", "value": 1.0, "timestamp": -5}, "metrics[1].timestamp"),
    ({"name": "", "value": 1.0}, "metrics[1].name"),
])
def test_a_bad_point_is_refused_alone_by_the_full_validator(point, field):
    raw = orjson.dumps({"workload_uid": "wl", "metrics": [{"name": "ok", "value": 1.0, "step": 0}, point,
                                                          {"name": "ok", "value": 2.0, "step": 1}]})
    assert validate._fast_metrics_batch(raw) is None
    batch = validate.metrics_batch_bytes(raw, orjson.loads)
    assert batch.rejected_count == 1 and [(r["index"], r["field"]) for r in batch.rejected] == [(1, field)]
    assert sorted(batch.series["ok"]) == [0, 1]
