"""Megatron-LM and Megatron-Bridge adapters, against stand-ins of named upstream releases.

Megatron-LM's training package does not install here (it needs Python 3.12), so the
programs below run our stand-ins (``tests/integrations/standins/``):

- ``megatron_core_v0_15``: ``megatron/training/training.py`` + ``global_vars.py`` of
  NVIDIA/Megatron-LM tag core_v0.15.0 (``decoupled_learning_rate`` 4th, no
  ``max_attention_logit``);
- ``megatron_head``: the same files at main d98e8a64 (2026-08-22, megatron-core 0.20.0)
  (``max_attention_logit`` 11th, keyword tail);
- ``megatron_bridge``: ``megatron/bridge/training/callbacks.py`` + the
  ``on_train_step_end`` call of ``train.py`` of NVIDIA-NeMo/Megatron-Bridge main
  067f987d (2026-08-22).

Real torch (0-dim loss tensors), real wandb (offline) where Megatron logs to W&B, the
exporter activated by the installed start-up line.
"""

import os
import sys

import pytest

# The stand-ins folder is never put on this process's sys.path (it holds directories
# named like real packages); only the programs under test see the stand-in roots.
from helpers import standins  # noqa: E402
from helpers.e2e import module_server, new_workload  # noqa: E402,F401  (a real Lens server per module)

pytest.importorskip("torch")
pytest.importorskip("wandb")

CORE_METRICS = {"lm loss", "learning-rate", "grad-norm", "num-zeros", "params-norm", "loss-scale"}

MEGATRON_PROGRAM = """
import os, types, torch
from megatron.training import global_vars
from megatron.training import training

tmp = os.environ["STANDIN_TMP"]
args = types.SimpleNamespace(
    rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
    pipeline_model_parallel_size=int(os.environ.get("PP", "1")),
    tensorboard_dir=os.environ.get("TB_DIR") or None, tensorboard_log_interval=int(os.environ.get("TB_INTERVAL", "1")),
    log_interval=2, wandb_project=os.environ.get("WB_PROJECT", ""), wandb_exp_name="exp",
    wandb_save_dir=tmp, save=tmp, consumed_train_samples=0, global_batch_size=4,
    decoupled_lr=None, log_loss_scale_to_tensorboard=False, log_params_norm=True,
    log_max_attention_logit=False, freeze_all_layers=False, train_iters=6, iteration=0)
global_vars.set_global_variables(args)
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
from megatron.core.optimizer import FP32Optimizer
optimizer = FP32Optimizer(model.parameters(), lr=0.1)
batches = [(torch.randn(4, 4), torch.randn(4, 1)) for _ in range(args.train_iters)]
%s
if global_vars.get_wandb_writer() is not None:
    global_vars.get_wandb_writer().finish()
"""

TRAIN = "training.train(model, optimizer, batches)"


def _detected(result, base, wrapper=None):
    det = result.detection["detection"]
    assert det["base"] == base, result.detection
    assert det["wrapper"] == wrapper, result.detection
    assert det["method"] == "exact", result.detection
    return det


def test_core_v0_15_with_wandb_gated_off_reports_core_metrics_from_the_last_rank_only(module_server, tmp_path):
    # W&B writer exists on the last rank, but no TensorBoard writer: Megatron sends no
    # per-iteration value to W&B, so the adapter reports them itself (source "megatron").
    uid = new_workload("mt-v015")
    results = standins.run_many(*[dict(code=MEGATRON_PROGRAM % TRAIN, tmp_path=tmp_path / f"r{rank}",
                                      roots=["megatron_core_v0_15"], workload=uid, server=module_server, RANK=rank,
                                      LOCAL_RANK=rank, WORLD_SIZE=2, WB_PROJECT="proj") for rank in (0, 1)])
    assert results[0].points == [], "only Megatron's logging rank (world_size - 1) reports"
    last = results[1]
    _detected(last, "megatron")
    assert last.detection["evidence_base"]["megatron"]["version"] == "0.15.0"
    assert last.detection["evidence_base"]["megatron"]["logging_rank"] == 1
    assert last.names("megatron") == CORE_METRICS
    assert last.names("wandb") == set()
    loss = last.series("lm loss", source="megatron")
    assert sorted(loss) == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(v, float) for v in loss.values())
    assert {p["rank"] for p in last.points} == {1}
    assert last.series("learning-rate", source="megatron") == {i: 0.1 for i in range(1, 7)}
    last.assert_each_point_once()
    assert last.detection["our_errors"] == 0
    last.check_server()


def test_head_with_wandb_on_reports_each_metric_exactly_once(module_server, tmp_path):
    # TensorBoard + W&B on the last rank, every 2nd iteration: W&B (raw patch, source
    # "wandb") is the source of what Megatron sends it; the adapter adds only what W&B
    # never receives in this run (loss-scale: --log-loss-scale-to-tensorboard unset).
    result = standins.run(MEGATRON_PROGRAM % TRAIN, tmp_path, ["megatron_head"],
                         workload=new_workload("mt-head"), server=module_server,
                         RANK=0, WORLD_SIZE=1, TB_DIR=str(tmp_path / "tb"), TB_INTERVAL=2, WB_PROJECT="proj")
    _detected(result, "megatron")
    assert result.detection["evidence_base"]["megatron"]["version"] == "0.20.0"
    assert result.names("megatron") == {"loss-scale"}
    wandb_names = result.names("wandb")
    assert {"lm loss", "learning-rate", "grad-norm", "num-zeros", "params-norm", "batch-size",
            "samples vs steps"} <= wandb_names
    assert sorted(result.series("lm loss", source="wandb")) == [2, 4, 6]
    assert sorted(result.series("loss-scale", source="megatron")) == [1, 2, 3, 4, 5, 6]
    result.assert_each_point_once()
    result.check_server()


def test_wandb_on_but_raw_wandb_integration_disabled_reports_everything_itself(tmp_path):
    # Nothing mirrors the W&B stream (PRIMUS_LENS_DISABLED_INTEGRATIONS=wandb): the adapter
    # reports every core metric, every iteration, so nothing is lost.
    result = standins.run(MEGATRON_PROGRAM % TRAIN, tmp_path, ["megatron_head"], workload="mt-nowandb",
                         TB_DIR=str(tmp_path / "tb"), TB_INTERVAL=2, WB_PROJECT="proj",
                         PRIMUS_LENS_DISABLED_INTEGRATIONS="wandb")
    assert result.sources() == {"megatron"}
    assert result.names("megatron") == CORE_METRICS
    assert sorted(result.series("lm loss")) == [1, 2, 3, 4, 5, 6]
    result.assert_each_point_once()


def test_signature_drift_binds_by_name_in_both_releases(tmp_path):
    # Same program, both stand-ins, no W&B: identical metric names and steps, although
    # the positional order of training_log differs (decoupled_learning_rate 4th in
    # core_v0.15; max_attention_logit 11th plus keywords at HEAD).
    outcomes = {}
    roots = ("megatron_core_v0_15", "megatron_head")
    runs = standins.run_many(*[dict(code=MEGATRON_PROGRAM % TRAIN, tmp_path=tmp_path / s, roots=[s], workload=s)
                               for s in roots])
    for standin, result in zip(roots, runs):
        outcomes[standin] = {name: sorted(result.series(name, source="megatron")) for name in CORE_METRICS}
        assert result.series("learning-rate", source="megatron")[3] == 0.1
        assert result.series("loss-scale", source="megatron")[3] == 1.0
    assert outcomes["megatron_core_v0_15"] == outcomes["megatron_head"]
    assert outcomes["megatron_head"]["lm loss"] == [1, 2, 3, 4, 5, 6]


def test_megatron_own_error_passes_through_untouched(tmp_path):
    # core_v0.15 asserts ``decoupled_learning_rate is None`` when --decoupled-lr is unset.
    code = MEGATRON_PROGRAM % """
try:
    training.train(model, optimizer, batches, decoupled_learning_rate=0.5)
except AssertionError as exc:
    import traceback
    print("FRAMEWORK-ERROR", type(exc).__name__, traceback.extract_tb(exc.__traceback__)[-1].name)
"""
    result = standins.run(code, tmp_path, ["megatron_core_v0_15"], workload="mt-err")
    assert "FRAMEWORK-ERROR AssertionError training_log" in result.stdout
    assert result.detection["our_errors"] == 0


RECORD_FAILS = """
from primus_lens_wandb_exporter.core.recorder import get_recorder
def _broken_record(*args, **kwargs):
    raise ValueError("simulated exporter bug")
get_recorder().record = _broken_record
try:
    training.train(model, optimizer, batches)
    print("TRAINING-DONE")
except ValueError as exc:
    print("OUR-ERROR-RAISED", exc)
print("LOSS-TENSOR-STILL-USABLE", float(model.weight.sum()) == float(model.weight.sum()))
"""


def test_our_error_never_reaches_the_training_loop(tmp_path):
    result = standins.run(MEGATRON_PROGRAM % RECORD_FAILS, tmp_path, ["megatron_head"], workload="mt-ours",
                         PRIMUS_LENS_TESTING="0")
    assert "TRAINING-DONE" in result.stdout
    assert "OUR-ERROR-RAISED" not in result.stdout
    assert result.detection["our_errors"] == 6  # counted, once per call; logged once
    assert result.stderr.count("simulated exporter bug") == 1
    # Megatron's own progress lines were all printed: the original ran every iteration.
    assert result.stdout.count(" iteration ") == 3


def test_testing_switch_makes_our_error_raise_after_the_original_ran(tmp_path):
    result = standins.run(MEGATRON_PROGRAM % RECORD_FAILS, tmp_path, ["megatron_head"], workload="mt-testing",
                         PRIMUS_LENS_TESTING="1")
    assert "OUR-ERROR-RAISED simulated exporter bug" in result.stdout
    assert "TRAINING-DONE" not in result.stdout


BRIDGE_PROGRAM = """
import os, types, torch
from megatron.bridge.training.pretrain import pretrain

cfg = types.SimpleNamespace(logger=types.SimpleNamespace(wandb_project=os.environ.get("WB_PROJECT") or None,
                                                         wandb_exp_name="exp", wandb_save_dir=os.environ["STANDIN_TMP"]),
                            train=types.SimpleNamespace(train_iters=5))
torch.manual_seed(0)
pretrain(cfg, callbacks=None)
"""


def test_bridge_callback_is_added_without_code_and_claims_megatron_bridge(module_server, tmp_path):
    result = standins.run(BRIDGE_PROGRAM, tmp_path, ["megatron_bridge"],
                         workload=new_workload("bridge"), server=module_server)
    _detected(result, "megatron_bridge")
    # on_train_step_end fires before train_state.step += 1; Bridge logs with the new value.
    assert sorted(result.series("lm loss", source="megatron_bridge")) == [1, 2, 3, 4, 5]
    assert sorted(result.series("grad-norm", source="megatron_bridge")) == [1, 2, 3, 4, 5]
    result.assert_each_point_once()
    result.check_server()


def test_bridge_with_its_wandb_logger_only_claims(module_server, tmp_path):
    result = standins.run(BRIDGE_PROGRAM, tmp_path, ["megatron_bridge"],
                         workload=new_workload("bridge-wb"), server=module_server, WB_PROJECT="proj")
    _detected(result, "megatron_bridge")
    assert "megatron_bridge" not in result.sources()
    assert sorted(result.series("lm loss", source="wandb")) == [1, 2, 3, 4, 5]
    result.assert_each_point_once()
    result.check_server()


@pytest.mark.parametrize("version, patched", [("0.14.0", False), ("0.15.0", True), ("0.20.0", True), ("0.21.0", False)])
def test_adapter_enables_itself_only_on_tested_megatron_core_versions(monkeypatch, version, patched):
    import types

    from primus_lens_wandb_exporter.core import patching, registry
    from primus_lens_wandb_exporter.integrations import megatron as adapter

    def training_log(loss_dict, total_loss_dict, learning_rate, iteration, loss_scale, report_memory_flag,
                     skipped_iter, grad_norm, params_norm, num_zeros_in_grad, max_attention_logit):
        return report_memory_flag

    module = types.ModuleType("megatron.training.training")
    training_log.__module__ = module.__name__
    module.training_log = training_log
    monkeypatch.setitem(sys.modules, "megatron.core.package_info", types.SimpleNamespace(__version__=version))
    try:
        registry.run_watch(adapter.MEGATRON, None, module)
        assert (module.training_log is not training_log) is patched
    finally:
        if module.training_log is not training_log:  # undo only our patch of this throwaway module
            patching._patches[:] = [p for p in patching._patches if p[0] is not module]
            module.training_log = training_log
