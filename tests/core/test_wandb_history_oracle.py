"""Lens holds exactly what W&B's history holds, at wandb's step-rule edges.

Each scenario is a real program with real wandb run in a fresh interpreter (the installed
start-up line activates the exporter), reporting to a real Lens server and to the local
JSONL sink. The oracle (tests/helpers/wandb_oracle.py) reads W&B's own ``.wandb`` record of the
offline run; Lens (query API, ``x=row``) and the JSONL sink must hold the same points:
0 missing, 0 extra, 0 different in value, step or row. The same script in
``WANDB_MODE=disabled`` (no wandb-core, no ``.wandb``: the exporter's rules alone) must
give the same points as the offline run's record.

``EXPECT`` pins, per scenario, the W&B facts the scenario is about (read from the
oracle, so a wandb that behaved differently would be noticed here, not silently agreed
with): two rows at one step, fractional steps, filled step values, dropped stale steps ...
"""

import pytest

from helpers.server import LENS_DB_KINDS
from helpers.exporter import exporter_env, run_python, wandb_run_dir
from helpers.wandb_oracle import (assert_same_points, jsonl_points, lens_points, summary_only_values,
                                  wandb_expected_points)

HEAD = """
import wandb
run = wandb.init(project="oracle", name="edges")
"""

SCENARIOS = {
    # HF Trainer with eval_strategy="steps": eval at the last step, then trainer.evaluate():
    # two rows at train/global_step 4; then the end-of-training keys only in the summary.
    "two_rows_one_step": """
run.define_metric("train/global_step")
run.define_metric("*", step_metric="train/global_step", step_sync=True)
for s in (1, 2, 3, 4):
    run.log({"train/loss": 1.0 / s, "train/global_step": s})              # rows 0-3
run.log({"eval/loss": 0.5, "eval/runtime": 1.5, "train/global_step": 4})  # row 4
run.log({"eval/loss": 0.4, "eval/runtime": 1.6, "eval/samples_per_second": 9.0,
         "train/global_step": 4})                                          # row 5
run.summary["train_runtime"] = 12.5
run.summary["train_loss"] = 0.3
run.log({"train/global_step": 4})                                          # row 6
""",
    # define_metric("val/*", step_metric="epoch") with epochs 0.5 apart; one epoch value twice.
    "fractional_epoch": """
run.define_metric("val/*", step_metric="epoch")
for i in range(8):
    run.log({"train/loss": 1.0 / (i + 1), "epoch": i * 0.5})   # rows 0-7
    if i % 2:
        run.log({"val/loss": 0.1 * i})                          # W&B fills epoch
run.log({"val/acc": 0.7, "epoch": 3.5})
run.log({"val/acc": 0.8, "epoch": 3.0})                         # charted at 3.0, its own row
run.log({"val/acc": 0.9, "epoch": 3.0})                         # a second row at 3.0
""",
    # A partial glob covers only its keys; the step metric (not covered) is charted by row.
    "partial_glob": """
run.define_metric("val/*", step_metric="epoch")
for e in range(3):
    run.log({"train/loss": 1.0 - e * 0.1, "val/loss": 2.0 - e * 0.1, "epoch": e + 0.25, "lr": 0.1})
    run.log({"train/loss": 0.5, "val/acc": 0.5 + e})
""",
    # Several globs and names; keys bound once (a later definition of the glob does not
    # rebind them); a glob defined after a key was logged binds it from then on; a name
    # defined without a step metric is not matched by a glob.
    "multiple_globs": """
run.log({"late/x": 1.0, "gs": 0, "epoch": 0.0})                         # row 0: no rules yet
run.define_metric("gs")
run.define_metric("val/*", step_metric="epoch")
run.define_metric("train/*", step_metric="gs")
run.define_metric("test/*", step_metric="epoch", step_sync=False)
run.define_metric("lr", step_metric="gs")
run.define_metric("train/special")                                     # defined by name: no step metric
for i in range(1, 4):
    run.log({"train/loss": 1.0 / i, "train/special": i, "val/loss": 2.0 / i, "test/loss": 3.0 / i,
             "lr": 0.01 * i, "other": i, "gs": 10 * i, "epoch": i / 4})
    run.log({"val/acc": 0.1 * i, "test/acc": 0.2 * i, "train/acc": 0.3 * i})  # fills epoch, gs
    run.log({"test/acc": 0.4 * i})                                       # no fill (step_sync=False)
run.define_metric("late/*", step_metric="epoch")
run.define_metric("train/*", step_metric="epoch")                      # train/loss stays on gs
run.log({"late/x": 2.0, "train/loss": 0.1, "train/new": 5.0})
""",
    # A row that logs only the step metric updates the value W&B fills in later.
    "step_only_rows": """
run.define_metric("val/*", step_metric="epoch")
for e in range(4):
    run.log({"epoch": e + 0.5})                # a step-only row
    run.log({"val/loss": 1.0 / (e + 1)})       # epoch filled: the step-only row's value
    run.log({"val/acc": 0.1 * e})
""",
    # step_sync: W&B fills 0 before the step metric has a value, the latest value after;
    # step_sync=False fills nothing (charted by row); a reserved name ("step", not a Lens
    # metric) as the step metric still gives the step.
    "filled_step_values": """
run.define_metric("val/*", step_metric="epoch")
run.define_metric("nosync/*", step_metric="epoch", step_sync=False)
run.define_metric("loss", step_metric="step")
run.log({"val/loss": 3.0})                         # epoch filled with 0
run.log({"epoch": 1.0, "nosync/a": 1.0})
run.log({"nosync/a": 2.0, "val/loss": 2.0})        # epoch filled for val/loss: nosync/a at it too
run.log({"nosync/a": 3.0})                         # no fill: charted by row
for i in range(3):
    run.log({"loss": 1.0 / (i + 1), "step": 100 * (i + 1)})
    run.log({"loss": 0.5 / (i + 1)})               # "step" filled by W&B
run.define_metric("g*", step_metric="gstep")       # the glob covers its own step metric
run.log({"gstep": 5, "gnorm": 1.0})                # gnorm at 5; gstep covered by g*: at its own value
run.log({"gnorm": 2.0})                            # gstep filled
""",
    # commit=False accumulates one row; a later value of a key in the open row replaces
    # it; the step metric arriving in the committing call sets the step of the whole row.
    "commit_false": """
run.define_metric("val/*", step_metric="epoch")
run.log({"val/a": 1.0, "x": 1.0}, commit=False)
run.log({"val/b": 2.0, "x": 2.0}, commit=False)         # x replaced in the open row
run.log({"val/c": 3.0, "epoch": 7.5})                   # commits row 0, all val/* at 7.5
run.log({"val/a": 4.0}, commit=False)
run.log({"val/b": 5.0}, commit=True)                    # row 1, epoch filled (7.5)
run.log({"y": 1.0}, commit=False)
run.log({"z": 1.0}, step=5)                             # closes row 2, opens row 5
run.log({"w": 1.0})                                     # row 5 committed
run.log({"tail": 1.0}, commit=False)                    # open at finish: written then
""",
    # Explicit steps: the same step twice shares a row; a plain log commits it; a stale
    # step is dropped by wandb, commit=True or not; the open row is written at finish.
    "explicit_and_stale_steps": """
run.log({"a": 1.0})                  # row 0
run.log({"b": 1.0}, step=5)
run.log({"c": 1.0}, step=5)
run.log({"d": 1.0})                  # row 5 committed
run.log({"stale": 1.0}, step=3)      # dropped
run.log({"stale2": 1.0}, step=2, commit=True)   # dropped, commits nothing
run.log({"e": 1.0})                  # row 6
run.log({"f": 1.0}, step=10, commit=False)
run.log({"g": 1.0}, step=12)         # closes row 10
run.log({"h": 1.0}, step=12, commit=True)       # row 12 committed
run.log({"i": 1.0}, step=20)         # open at finish
""",
    # A pending summary value never overwrites history; summary-only keys stay points.
    "summary_then_log": """
run.summary["k"] = 1.0
run.log({"k": 2.0})                  # W&B history: 2.0
run.summary["only"] = 5.0
run.log({"other": 1.0})
run.log({"k": 3.0, "other": 2.0}, commit=False)
run.summary["k"] = 9.0               # summary of a history key: no point
run.log({"other": 3.0})
run.summary["final"] = 7.0           # set last: at the last row at finish
""",
}

# (name, row) -> (step, value): what W&B itself did, per scenario.
EXPECT = {
    "two_rows_one_step": {("eval/loss", 4): (4, 0.5), ("eval/loss", 5): (4, 0.4),
                          ("eval/runtime", 4): (4, 1.5), ("eval/runtime", 5): (4, 1.6),
                          ("train/global_step", 0): (0, 1.0), ("train/loss", 0): (1, 1.0)},
    "fractional_epoch": {("val/loss", 2): (0.5, 0.1), ("val/acc", 12): (3.5, 0.7),
                         ("val/acc", 13): (3.0, 0.8), ("val/acc", 14): (3.0, 0.9)},
    "partial_glob": {("val/loss", 0): (0.25, 2.0), ("train/loss", 0): (0, 1.0), ("epoch", 0): (0, 0.25),
                     ("val/acc", 1): (0.25, 0.5), ("epoch", 1): (1, 0.25), ("train/loss", 1): (1, 0.5)},
    "multiple_globs": {("late/x", 0): (0, 1.0), ("train/loss", 1): (10, 1.0), ("val/loss", 1): (0.25, 2.0),
                       ("test/loss", 1): (0.25, 3.0), ("lr", 1): (10, 0.01), ("train/special", 1): (1, 1.0),
                       ("other", 1): (1, 1.0), ("test/acc", 2): (0.25, 0.2), ("test/acc", 3): (3, 0.4),
                       ("val/acc", 2): (0.25, 0.1), ("late/x", 10): (0.75, 2.0), ("train/loss", 10): (30, 0.1),
                       ("train/new", 10): (0.75, 5.0), ("gs", 10): (10, 30.0)},
    "step_only_rows": {("epoch", 0): (0, 0.5), ("val/loss", 1): (0.5, 1.0), ("epoch", 1): (1, 0.5),
                       ("val/loss", 4): (1.5, 0.5),
                       ("val/acc", 11): (3.5, 0.30000000000000004)},
    "filled_step_values": {("val/loss", 0): (0.0, 3.0), ("epoch", 0): (0, 0.0), ("val/loss", 2): (1.0, 2.0),
                           ("nosync/a", 2): (1.0, 2.0), ("nosync/a", 3): (3, 3.0), ("loss", 4): (100, 1.0),
                           ("loss", 5): (100, 0.5), ("gnorm", 10): (5, 1.0), ("gstep", 10): (5.0, 5.0),
                           ("gnorm", 11): (5, 2.0), ("gstep", 11): (5.0, 5.0)},
    "commit_false": {("x", 0): (0, 2.0), ("val/a", 0): (7.5, 1.0), ("val/b", 0): (7.5, 2.0),
                     ("val/a", 1): (7.5, 4.0), ("epoch", 1): (1, 7.5), ("y", 2): (2, 1.0),
                     ("z", 5): (5, 1.0), ("w", 5): (5, 1.0), ("tail", 6): (6, 1.0)},
    "explicit_and_stale_steps": {("a", 0): (0, 1.0), ("b", 5): (5, 1.0), ("c", 5): (5, 1.0), ("d", 5): (5, 1.0),
                                 ("e", 6): (6, 1.0), ("f", 10): (10, 1.0), ("g", 12): (12, 1.0),
                                 ("h", 12): (12, 1.0), ("i", 20): (20, 1.0)},
    "summary_then_log": {("k", 0): (0, 2.0), ("k", 2): (2, 3.0), ("other", 2): (2, 3.0)},
}
ABSENT = {
    "explicit_and_stale_steps": {"stale", "stale2"},
    "multiple_globs": {"step"},
    "filled_step_values": {"step"},
}
SUMMARY_ONLY = {
    "two_rows_one_step": {"train_runtime": 12.5, "train_loss": 0.3},
    "summary_then_log": {"only": 5.0, "final": 7.0},
}


def _run(code, env):
    run_python(HEAD + code + "\nrun.finish()\n", env)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lens_holds_exactly_wandbs_history(scenario, lens_server, tmp_path):
    _check(scenario, lens_server, tmp_path, disabled_too=True)


# PostgreSQL: the storage edges (several rows at one step, float steps).
@pytest.mark.parametrize("lens_db_kind", [LENS_DB_KINDS[1]], indirect=True)
@pytest.mark.parametrize("scenario", ["two_rows_one_step", "fractional_epoch"])
def test_lens_on_postgres_holds_exactly_wandbs_history(scenario, lens_db_kind, lens_server, tmp_path):
    _check(scenario, lens_server, tmp_path, disabled_too=False)


def _check(scenario, lens_server, tmp_path, disabled_too):
    uid = f"oracle-{scenario.replace('_', '-')}"
    jsonl = tmp_path / "jsonl"
    _run(SCENARIOS[scenario], exporter_env(lens_server, tmp_path, uid, PRIMUS_LENS_WANDB_OUTPUT_PATH=jsonl,
                                           PRIMUS_LENS_WANDB_SAVE_LOCAL="true"))
    run_dir = wandb_run_dir(tmp_path)
    expected = wandb_expected_points(run_dir)
    # The scenario really is the edge it names (W&B's own behaviour, read back).
    for key, point in EXPECT[scenario].items():
        assert expected.get(key) == point, (key, expected.get(key), point)
    names = {name for name, _ in expected}
    assert not names & ABSENT.get(scenario, set())
    summary = summary_only_values(run_dir)
    assert summary == SUMMARY_ONLY.get(scenario, {})

    assert_same_points(expected, jsonl_points(jsonl), f"{scenario}: JSONL sink vs W&B", summary_only=summary)
    assert_same_points(expected, lens_points(lens_server, uid), f"{scenario}: Lens vs W&B", summary_only=summary)

    if not disabled_too:
        return
    # Disabled mode: no wandb-core, no .wandb; the exporter's rules alone give the same
    # points (and no summary-only ones: a disabled run's summary is a plain dict).
    disabled = tmp_path / "disabled"
    (tmp_path / "d").mkdir()
    _run(SCENARIOS[scenario], exporter_env(None, tmp_path / "d", f"{uid}-disabled", WANDB_MODE="disabled",
                                           PRIMUS_LENS_WANDB_API_REPORTING="false",
                                           PRIMUS_LENS_WANDB_OUTPUT_PATH=disabled,
                                           PRIMUS_LENS_WANDB_SAVE_LOCAL="true"))
    assert_same_points(expected, jsonl_points(disabled), f"{scenario}: disabled mode vs W&B offline")


def test_an_open_row_is_sent_by_a_flush_as_it_stands(tmp_path):
    # A process that ends without finish (os._exit after the exporter's bounded flush, as on
    # SIGTERM) still delivers the row wandb had not written yet, by the rules as they stand.
    code = HEAD + """
import os
from primus_lens_wandb_exporter.core.recorder import get_recorder
run.define_metric("val/*", step_metric="epoch")
run.log({"epoch": 1.5})
run.log({"val/a": 1.0}, commit=False)
assert get_recorder().flush(10)
os._exit(0)
"""
    out = tmp_path / "jsonl"
    run_python(code, exporter_env(None, tmp_path, "oracle-open-row", WANDB_MODE="disabled",
                                  PRIMUS_LENS_WANDB_API_REPORTING="false", PRIMUS_LENS_WANDB_OUTPUT_PATH=out,
                                  PRIMUS_LENS_WANDB_SAVE_LOCAL="true"))
    assert dict(jsonl_points(out)) == {("epoch", 0): (0, 1.5), ("val/a", 1): (1.5, 1.0), ("epoch", 1): (1, 1.5)}
