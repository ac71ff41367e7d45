"""Lightning adapter, end to end: a real Lightning ``Trainer`` on CPU in a fresh interpreter
(the installed start-up line and Lightning's ``callbacks_factory`` entry point are all that
activates us), a real W&B run (offline) where the scenario has one, and the real Lens server.

Expected values come from a probe ``Logger`` inside the training program: it records exactly
what Lightning hands its loggers (metrics and step), which is also what ``WandbLogger`` logs.
"""

import json
import os

import pytest

from helpers.e2e import (assert_close, assert_emitted_exactly, by_name, detection_of, jsonl_rows, mirrored_points,
                         module_server, new_workload, points_of, rows_sharing_a_step, sources)  # noqa: F401 (fixture)
from helpers.exporter import exporter_env, run_python, wandb_run_dir
from helpers.wandb_oracle import assert_same_points, jsonl_points, wandb_expected_points

pytest.importorskip("lightning")
pytest.importorskip("wandb")

TRAIN = r'''
import json, os, sys
import torch
opts = json.loads(sys.argv[1])
if opts["namespace"] == "pytorch_lightning":
    import pytorch_lightning as L
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger, WandbLogger
    from pytorch_lightning.loggers.logger import Logger
    from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy
else:
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from lightning.pytorch.loggers.logger import Logger
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch.utils.data import DataLoader, TensorDataset

class Probe(Logger):
    """What Lightning hands its loggers: the reference the test compares Lens with."""
    seen = []
    name = "probe"
    version = "0"
    def log_metrics(self, metrics, step=None):
        Probe.seen.append({"step": step, "metrics": {k: float(v) for k, v in metrics.items()}})
    def log_hyperparams(self, params, *args, **kwargs):
        pass

class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        # epoch_metrics: also the epoch mean (train_loss_step / train_loss_epoch), logged at epoch end
        self.log("train_loss", loss, on_epoch=bool(opts.get("epoch_metrics")))
        return loss
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        if opts.get("scheduler"):  # a learning rate that changes, for LearningRateMonitor
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]
        return optimizer

torch.manual_seed(0)
data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
out = opts["out"]
loggers = {
    "wandb": lambda: [WandbLogger(project="lens-lightning", save_dir=out), Probe()],
    "csv": lambda: [CSVLogger(out), Probe()],
    "explicit": lambda: [CSVLogger(out), __import__("primus_lens_wandb_exporter").LensLogger(), Probe()],
}[opts["logger"]]()
kwargs = dict(accelerator="cpu", devices=1)
if opts.get("strategy") == "ddp":
    kwargs = dict(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo"))
if opts.get("strategy") == "deepspeed":
    # Lightning's DeepSpeedStrategy accepts CUDA only; this user strategy runs it on CPU (gloo).
    class CPUDeepSpeedStrategy(DeepSpeedStrategy):
        def setup_environment(self):
            DDPStrategy.setup_environment(self)
    kwargs["strategy"] = CPUDeepSpeedStrategy(
        stage=1, process_group_backend="gloo", parallel_devices=[torch.device("cpu", 0)],
        config={"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 1},
                "optimizer": {"type": "Adam", "params": {"lr": 0.01, "torch_adam": True}}})
if opts.get("lr_monitor"):
    kwargs["callbacks"] = [LearningRateMonitor(logging_interval="step")]
trainer = L.Trainer(max_epochs=opts.get("epochs", 2), log_every_n_steps=opts.get("log_every_n_steps", 2),
                    accumulate_grad_batches=opts.get("accumulate", 1), logger=loggers,
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                    default_root_dir=out, **kwargs)
trainer.fit(Model(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=8))
lens = __import__("primus_lens_wandb_exporter")
if trainer.global_rank != 0:
    sys.exit(0)
with open(os.path.join(out, "probe.json"), "w") as fh:
    json.dump({"seen": Probe.seen,
               "loggers": [type(lg).__name__ for lg in trainer.loggers],
               "callbacks": [type(cb).__name__ for cb in trainer.callbacks],
               "lens_logger_is_namespace_logger": isinstance(lens.LensLogger(), Logger),
               "other_namespace_imported": ("lightning.pytorch" if opts["namespace"] == "pytorch_lightning"
                                            else "pytorch_lightning") in sys.modules}, fh)
'''


def _train(tmp_path, server, logger, namespace="lightning.pytorch", **opts):
    uid = new_workload(f"pl-{logger}")
    out = tmp_path / "run"
    out.mkdir()
    env = exporter_env(server, tmp_path, uid, PRIMUS_LENS_WANDB_OUTPUT_PATH=tmp_path / "jsonl")
    if opts.get("strategy") == "deepspeed":
        env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                    "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                    # DeepSpeed compiles its CPU comm op once (~20 s); later runs reuse the build.
                    "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")
                    or os.path.expanduser("~/.cache/torch_extensions")})
    script = tmp_path / "train_lightning.py"  # a file: Lightning's DDP launcher re-runs it per rank
    script.write_text(TRAIN)
    run_python(script, env, args=[json.dumps({"logger": logger, "namespace": namespace, "out": str(out), **opts})],
               timeout=600)
    with open(out / "probe.json") as fh:
        probe = json.load(fh)
    return uid, probe


def _free_port():
    from helpers.server import free_port

    return free_port()


def _expected(probe):
    """{metric: {step: value}} of what Lightning handed its loggers."""
    out = {}
    for call in probe["seen"]:
        for name, value in call["metrics"].items():
            out.setdefault(name, {})[call["step"]] = value
    return out


def _logged(probe, with_global_step=False):
    """[(name, step)] of every metric Lightning handed its loggers, one entry per hand-over."""
    out = [(name, call["step"]) for call in probe["seen"] for name in call["metrics"]]
    if with_global_step:  # WandbLogger adds trainer/global_step to each row
        out += [("trainer/global_step", call["step"]) for call in probe["seen"]]
    return out


def _assert_matches_probe(metrics, probe):
    expected = _expected(probe)
    assert {"train_loss", "val_loss", "epoch"} <= set(expected)
    for name, steps in expected.items():
        assert_close(metrics.get(name, {}), steps, name)


def test_lightning_with_wandb_logger_reports_the_wandb_stream_once_stepped_by_trainer_global_step(
        module_server, tmp_path):
    uid, probe = _train(tmp_path, module_server, "wandb")
    assert "LensLogger" not in probe["loggers"], "the W&B stream is the source: no LensLogger attached"
    logged = _logged(probe, with_global_step=True)
    det = detection_of(module_server, uid, "lightning")
    assert det["base"] == "pytorch"
    points = points_of(module_server, uid, "wandb", len(set(logged)))
    metrics = by_name(points)
    _assert_matches_probe(metrics, probe)
    # trainer/global_step is the other keys' x axis; WandbLogger defines it by name with no step
    # metric, so W&B charts it by row (docs/wandb-history.md): one per row, the steps logged.
    global_steps = sorted((p["row"], p["iteration"], p["value"]) for p in points
                          if p["metric_name"] == "trainer/global_step")
    assert [v for _, _, v in global_steps] == [call["step"] for call in probe["seen"]]
    assert all(row == step for row, step, _ in global_steps)
    assert {p["rank"] for p in points} == {0}
    assert set(sources(module_server, uid)) == {"wandb"}, "the LensLogger must not double-report"
    rows = jsonl_rows(tmp_path / "jsonl")
    assert {r["source"] for r in rows} == {"wandb"}
    assert_emitted_exactly([r for r in rows if r["name"] != "trainer/global_step"], "wandb", _logged(probe))
    assert sum(r["name"] == "trainer/global_step" for r in rows) == len(probe["seen"])


def test_lightning_wandb_history_is_mirrored_exactly_with_accumulation_validation_and_lr_monitor(
        module_server, tmp_path):
    """Issue 10's oracle: every point of W&B's own history (the run's .wandb file) is in Lens and
    in the JSONL sink once, at W&B's row, with W&B's step (trainer/global_step) and value."""
    uid, _probe = _train(tmp_path, module_server, "wandb", epochs=2, accumulate=2, log_every_n_steps=1,
                         lr_monitor=True, scheduler=True, epoch_metrics=True)
    expected = wandb_expected_points(wandb_run_dir(tmp_path / "run"))
    names = {name for name, _row in expected}
    assert {"train_loss_step", "train_loss_epoch", "val_loss", "lr-SGD", "epoch", "trainer/global_step"} <= names
    # The scenario holds what a (name, step) key would collapse: LearningRateMonitor logs on each of
    # the two micro-batches of an optimizer step, and at each epoch end the training, validation and
    # epoch-mean rows (each with `epoch`) share one trainer/global_step.
    assert {"lr-SGD", "epoch"} <= {name for name, _step in rows_sharing_a_step(expected)}
    assert_same_points(expected, mirrored_points(module_server, uid, expected), "Lens vs W&B history")
    assert_same_points(expected, jsonl_points(tmp_path / "jsonl"), "JSONL sink vs W&B history")
    assert set(sources(module_server, uid)) == {"wandb"}


def test_lightning_without_wandb_logger_reports_through_an_attached_lens_logger(module_server, tmp_path):
    uid, probe = _train(tmp_path, module_server, "csv")
    assert probe["loggers"] == ["CSVLogger", "Probe", "LensLogger"], "appended last: loggers[0] stays the user's"
    assert probe["callbacks"].count("LensCallback") == 1
    det = detection_of(module_server, uid, "lightning")
    assert det["base"] == "pytorch"
    logged = _logged(probe)
    points = points_of(module_server, uid, "lightning", len(set(logged)))
    _assert_matches_probe(by_name(points), probe)
    assert len(points) == len(set(logged))
    assert {p["rank"] for p in points} == {0}
    assert set(sources(module_server, uid)) == {"lightning"}
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "lightning", logged)


def test_pytorch_lightning_namespace_explicit_lens_logger_is_used_once_and_the_other_namespace_not_imported(
        module_server, tmp_path):
    uid, probe = _train(tmp_path, module_server, "explicit", namespace="pytorch_lightning", epochs=1)
    assert probe["lens_logger_is_namespace_logger"], "LensLogger subclasses pytorch_lightning's Logger"
    assert not probe["other_namespace_imported"], "we imported lightning.pytorch the user did not import"
    assert probe["loggers"].count("LensLogger") == 1, "the factory's callback must not add a second one"
    det = detection_of(module_server, uid, "lightning")
    assert det["base"] == "pytorch"
    logged = _logged(probe)
    points = points_of(module_server, uid, "lightning", len(set(logged)))
    _assert_matches_probe(by_name(points), probe)
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "lightning", logged)


@pytest.mark.slow
def test_lightning_deepspeed_strategy_claims_deepspeed_as_the_base(module_server, tmp_path):
    pytest.importorskip("deepspeed")
    uid, probe = _train(tmp_path, module_server, "csv", strategy="deepspeed", epochs=1)
    det = detection_of(module_server, uid, "lightning")
    assert det["base"] == "deepspeed"
    logged = _logged(probe)
    points = points_of(module_server, uid, "lightning", len(set(logged)))
    metrics = by_name(points)
    for name, steps in _expected(probe).items():
        assert_close(metrics.get(name, {}), steps, name)
    assert {p["rank"] for p in points} == {0}
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "lightning", logged)


CALLBACK_ERRORS = r'''
import os
import lightning.pytorch as L
from primus_lens_wandb_exporter import LensCallback, LensLogger

class Hostile:
    """A trainer whose every attribute access fails: our code must absorb it."""
    def __getattr__(self, name):
        raise RuntimeError("hostile " + name)

assert isinstance(LensCallback(), L.Callback) and isinstance(LensLogger(), L.loggers.Logger)
for testing in ("0", "1"):  # read at each error: one process checks both
    os.environ["PRIMUS_LENS_TESTING"] = testing
    try:
        LensCallback().setup(Hostile(), None, "fit")
    except RuntimeError as exc:
        print("RAISED", exc)
    else:
        print("ABSORBED")
'''


def test_lightning_callback_errors_never_reach_training_unless_testing(tmp_path):
    env = exporter_env(None, tmp_path, new_workload("pl-errors"), PRIMUS_LENS_WANDB_API_REPORTING="false")
    proc = run_python(CALLBACK_ERRORS, env)
    lines = proc.stdout.splitlines()
    assert lines[:1] == ["ABSORBED"] and lines[1].startswith("RAISED hostile"), proc.stdout + proc.stderr


@pytest.mark.slow
def test_lightning_ddp_two_processes_report_from_global_rank_zero_only(module_server, tmp_path):
    uid, probe = _train(tmp_path, module_server, "csv", strategy="ddp", epochs=1)
    det = detection_of(module_server, uid, "lightning")
    assert det["base"] == "pytorch"
    logged = _logged(probe)
    points = points_of(module_server, uid, "lightning", len(set(logged)))
    assert {p["rank"] for p in points} == {0}, "like every Lightning logger, rank zero reports"
    for name, steps in _expected(probe).items():
        assert_close(by_name(points).get(name, {}), steps, name)
    assert_emitted_exactly(jsonl_rows(tmp_path / "jsonl"), "lightning", logged)
