"""HF ``Trainer`` adapter, end to end: a tiny GPT-2 (from a config, random tokens) trained on
CPU by a real ``transformers.Trainer`` in a fresh interpreter (the installed start-up line is
all that activates us), a real W&B run (offline) where ``report_to`` asks for one, and the
real Lens server.

Expected values come from ``trainer.state.log_history``: every ``Trainer.log`` call, with the
``state.global_step`` it was made at.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers.e2e import (assert_close, assert_emitted_exactly, by_name, detection_of, emitted, jsonl_rows,
                         mirrored_points, module_server, new_workload, points_of, points_with,  # noqa: F401 (fixture)
                      rows_sharing_a_step, sources)
from helpers.server import LENS_DB_KINDS
from helpers.exporter import exporter_env, run_python, wandb_offline_records, wandb_run_dir
from helpers.wandb_oracle import assert_same_points, jsonl_points, summary_only_values, wandb_expected_points

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("wandb")

# HF's WandbCallback writes these to run.summary only (never to history).
SUMMARY_ONLY = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")

TRAIN = r'''
import json, os, sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
opts = json.loads(sys.argv[1])
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
data = [{"input_ids": torch.randint(0, 64, (16,))} for _ in range(48)]
for row in data:
    row["labels"] = row["input_ids"]
kwargs = {}
if opts.get("deepspeed"):
    kwargs["deepspeed"] = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
                           "gradient_accumulation_steps": "auto", "zero_optimization": {"stage": 1},
                           "optimizer": {"type": "Adam", "params": {"lr": "auto", "torch_adam": True}}}
    kwargs["ddp_backend"] = "gloo"
if opts.get("ddp"):
    kwargs["ddp_backend"] = "gloo"
if opts.get("eval_steps"):  # evaluation during training as well as the final evaluate() below
    kwargs.update(eval_strategy="steps", eval_steps=opts["eval_steps"], per_device_eval_batch_size=4)
args = TrainingArguments(output_dir=opts["out"], max_steps=opts.get("max_steps", 12), per_device_train_batch_size=4,
                         logging_steps=opts.get("logging_steps", 5), report_to=opts["report_to"], save_strategy="no",
                         use_cpu=True, disable_tqdm=True, **kwargs)
if opts.get("eval_loss_by_epoch"):
    # The user's own run first (HF's WandbCallback reuses wandb.run), with eval/loss charted by the
    # fractional train/epoch; an explicit name wins over HF's "*" -> train/global_step.
    import wandb
    wandb.init(project="lens-hf")
    wandb.define_metric("eval/loss", step_metric="train/epoch")
callbacks = None
if opts.get("explicit"):
    from primus_lens_wandb_exporter import LensTrainerCallback
    callbacks = [LensTrainerCallback()]
trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks,
                  eval_dataset=data[:8] if opts.get("eval_steps") else None)
trainer.train()
trainer.evaluate(eval_dataset=data[:8])
if not trainer.is_world_process_zero():
    sys.exit(0)
with open(os.path.join(opts["out"], "result.json"), "w") as fh:
    json.dump({"log_history": trainer.state.log_history, "global_step": trainer.state.global_step,
               "callbacks": [type(cb).__name__ for cb in trainer.callback_handler.callbacks]}, fh)
'''


@pytest.fixture(scope="module")
def wandb_run(module_server, tmp_path_factory):
    """One ``report_to=["wandb"]`` training, shared by the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("hf-wandb")
    uid, result = _train(tmp_path, module_server, ["wandb"])
    return uid, result, tmp_path


def _train(tmp_path, server, report_to, **opts):
    uid = new_workload("hf-" + ("wandb" if report_to else "none"))
    out = tmp_path / "run"
    out.mkdir()
    env = exporter_env(server, tmp_path, uid, PRIMUS_LENS_WANDB_OUTPUT_PATH=tmp_path / "jsonl")
    if opts.get("deepspeed"):
        from helpers.server import free_port

        env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
                    "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                    # DeepSpeed compiles its CPU comm op once (~20 s); later runs reuse the build.
                    "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")
                    or os.path.expanduser("~/.cache/torch_extensions")})
    args = [json.dumps({"report_to": report_to, "out": str(out), **opts})]
    if opts.get("ddp"):
        script = tmp_path / "train_hf.py"
        script.write_text(TRAIN)
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)  # torchrun sets its own
        env["OMP_NUM_THREADS"] = "1"
        from helpers.server import free_port

        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
               f"--master_port={free_port()}", str(script), *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"torchrun exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    else:
        run_python(TRAIN, env, args=args, timeout=600)
    with open(out / "result.json") as fh:
        return uid, json.load(fh)


def _logged(result):
    """[(name, step)] of every value the Trainer logged (one per Trainer.log call and key)."""
    return [(k, entry["step"]) for entry in result["log_history"] for k in entry if k != "step"]


def _expected(result, rename=lambda k: k, skip=()):
    out = {}
    for entry in result["log_history"]:
        for key, value in entry.items():
            if key != "step" and key not in skip:
                out.setdefault(rename(key), {})[entry["step"]] = value
    return out


def _wandb_name(key):
    # HF's rewrite_logs (integrations/integration_utils.py): eval_x -> eval/x, test_x -> test/x, x -> train/x.
    for prefix in ("eval_", "test_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix):]
    return "train/" + key


def _assert_points_match(metrics, expected):
    for name, steps in expected.items():
        assert_close(metrics.get(name, {}), steps, name)


def test_hf_trainer_without_wandb_reports_every_log_at_state_global_step(module_server, tmp_path):
    uid, result = _train(tmp_path, module_server, [])
    assert result["callbacks"].count("LensTrainerCallback") == 1
    logged = _logged(result)
    final = {k for k, _ in logged} & set(SUMMARY_ONLY)
    assert final == set(SUMMARY_ONLY), "the end-of-run metrics are reported too"
    det = detection_of(module_server, uid, "hf_trainer")
    assert det["base"] == "pytorch"
    points = points_of(module_server, uid, "transformers", len(set(logged)))
    metrics = by_name(points)
    _assert_points_match(metrics, _expected(result))
    assert metrics["train_runtime"].keys() == {result["global_step"]}
    assert {p["rank"] for p in points} == {0}
    assert set(sources(module_server, uid)) == {"transformers"}
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "transformers", logged)


def test_hf_trainer_with_wandb_reports_the_wandb_stream_once_stepped_by_train_global_step(module_server, wandb_run):
    uid, result, tmp_path = wandb_run
    assert result["callbacks"].count("LensTrainerCallback") == 1
    assert "WandbCallback" in result["callbacks"]
    det = detection_of(module_server, uid, "hf_trainer")
    assert det["base"] == "pytorch"
    history = [(_wandb_name(k), s) for k, s in _logged(result) if k not in SUMMARY_ONLY]
    # train/global_step: one per W&B row. HF defines it by name with no step metric, so W&B
    # charts it by row (docs/wandb-history.md); its values are the global steps.
    n_rows = len(result["log_history"])
    points = points_of(module_server, uid, "wandb", len(set(history)) + len(SUMMARY_ONLY) + n_rows)
    global_steps = sorted((p["row"], p["value"]) for p in points if p["metric_name"] == "train/global_step")
    assert [v for _, v in global_steps] == [entry["step"] for entry in result["log_history"]]
    assert all(p["iteration"] == p["row"] for p in points if p["metric_name"] == "train/global_step")
    points = [p for p in points if p["metric_name"] != "train/global_step"]
    metrics = by_name(points)
    _assert_points_match(metrics, _expected(result, _wandb_name, skip=SUMMARY_ONLY))
    # The final metrics HF writes only to the W&B summary still reach Lens, once each.
    for key in SUMMARY_ONLY:
        assert len(metrics.get(key, {})) == 1, f"{key}: {metrics.get(key)}"
        assert list(metrics[key].values())[0] == pytest.approx(_expected(result)[key][result["global_step"]])
    assert {p["rank"] for p in points} == {0}
    assert set(sources(module_server, uid)) == {"wandb"}, "the callback must not double-report"
    rows = jsonl_rows(tmp_path / "jsonl")
    assert {r["source"] for r in rows} == {"wandb"}
    got = emitted(rows, "wandb")
    assert_emitted_exactly([r for r in rows if r["name"] not in SUMMARY_ONLY and r["name"] != "train/global_step"],
                           "wandb", history)
    assert all(sum(n for (name, _), n in got.items() if name == key) == 1 for key in SUMMARY_ONLY)


def test_hf_trainer_wandb_final_summary_metrics_land_at_the_final_global_step(module_server, wandb_run):
    uid, result, _ = wandb_run
    metrics = by_name(points_with(module_server, uid, "wandb", SUMMARY_ONLY))
    for key in SUMMARY_ONLY:
        assert metrics.get(key, {}).keys() == {result["global_step"]}, f"{key}: {metrics.get(key)}"


@pytest.mark.parametrize("lens_db_kind", LENS_DB_KINDS, indirect=True)
def test_hf_trainer_wandb_history_is_mirrored_exactly_with_eval_at_the_last_step_and_a_final_evaluate(
        lens_server, tmp_path):
    """Issue 10's oracle: every point of W&B's own history (the run's .wandb file) is in Lens and in
    the JSONL sink once, at W&B's row, with W&B's step and value. The evaluation at the last step
    and the final ``evaluate()`` both land at train/global_step = max_steps: W&B keeps both rows,
    so must Lens. ``eval/loss`` is charted by the fractional ``train/epoch`` (0.5, 1.0, 1.0).
    On both databases: the storage key and the float step are the server's."""
    uid, result = _train(tmp_path, lens_server, ["wandb"], max_steps=12, logging_steps=4, eval_steps=6,
                         eval_loss_by_epoch=True)
    run_dir = wandb_run_dir(tmp_path)
    history, _summary = wandb_offline_records(run_dir)
    expected = wandb_expected_points(run_dir)
    last = result["global_step"]
    evals = [row["_step"] for row in history if "eval/loss" in row and row.get("train/global_step") == last]
    assert len(evals) == 2, f"scenario: eval at the last step and the final evaluate(): {history}"
    assert ("eval/runtime", float(last)) in rows_sharing_a_step(expected)
    assert sorted(step for (name, _row), (step, _value) in expected.items() if name == "eval/loss") == [0.5, 1, 1]
    # HF writes its end-of-run metrics to the W&B summary only (no history row); Lens keeps each as
    # one point at the final global step, holding the summary's value.
    final = summary_only_values(run_dir)
    assert sorted(final) == sorted(SUMMARY_ONLY), final
    actual = mirrored_points(lens_server, uid, expected)
    final_steps = {name: step for (name, _row), (step, _value) in actual.items() if name in final}
    assert final_steps == dict.fromkeys(final, last), final_steps
    assert_same_points(expected, actual, "Lens vs W&B history", summary_only=final)
    assert_same_points(expected, jsonl_points(tmp_path / "jsonl"), "JSONL sink vs W&B history", summary_only=final)
    assert set(sources(lens_server, uid)) == {"wandb"}


def test_hf_trainer_explicit_callback_is_not_doubled_by_the_zero_code_attach(module_server, tmp_path):
    uid, result = _train(tmp_path, module_server, [], explicit=True, max_steps=5)
    assert result["callbacks"].count("LensTrainerCallback") == 1
    detection_of(module_server, uid, "hf_trainer")
    logged = _logged(result)
    points = points_of(module_server, uid, "transformers", len(set(logged)))
    _assert_points_match(by_name(points), _expected(result))
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "transformers", logged)


def test_hf_trainer_with_deepspeed_claims_deepspeed_as_the_base(module_server, tmp_path):
    pytest.importorskip("deepspeed")
    uid, result = _train(tmp_path, module_server, [], deepspeed=True, max_steps=6)
    det = detection_of(module_server, uid, "hf_trainer")
    assert det["base"] == "deepspeed"
    logged = _logged(result)
    points = points_of(module_server, uid, "transformers", len(set(logged)))
    _assert_points_match(by_name(points), _expected(result))
    assert {p["rank"] for p in points} == {0}
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "transformers", logged)


CALLBACK_ERRORS = r'''
import os
from primus_lens_wandb_exporter import LensTrainerCallback  # imports transformers.trainer_callback only

class Hostile:
    """Arguments whose every attribute access fails: our code must absorb it."""
    def __getattr__(self, name):
        raise RuntimeError("hostile " + name)

for testing in ("0", "1"):  # read at each error: one process checks both
    os.environ["PRIMUS_LENS_TESTING"] = testing
    callback = LensTrainerCallback()
    try:
        callback.on_train_begin(Hostile(), Hostile(), None)
        callback.on_log(Hostile(), Hostile(), None, logs={"loss": 1.0})
    except RuntimeError as exc:
        print("RAISED", exc)
    else:
        print("ABSORBED")
'''


def test_hf_callback_errors_never_reach_training_unless_testing(tmp_path):
    env = exporter_env(None, tmp_path, new_workload("hf-errors"), PRIMUS_LENS_WANDB_API_REPORTING="false")
    proc = run_python(CALLBACK_ERRORS, env)
    lines = proc.stdout.splitlines()
    assert lines[:1] == ["ABSORBED"] and lines[1].startswith("RAISED hostile"), proc.stdout + proc.stderr


@pytest.mark.slow
def test_hf_trainer_ddp_two_processes_report_from_world_process_zero_only(module_server, tmp_path):
    uid, result = _train(tmp_path, module_server, [], ddp=True, max_steps=6)
    det = detection_of(module_server, uid, "hf_trainer")
    assert det["base"] == "pytorch"
    logged = _logged(result)
    points = points_of(module_server, uid, "transformers", len(set(logged)))
    _assert_points_match(by_name(points), _expected(result))
    assert {p["rank"] for p in points} == {0}, "world process zero reports; rank 1 sends nothing"
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "transformers", logged)
