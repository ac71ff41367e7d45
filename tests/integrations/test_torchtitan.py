"""TorchTitan adapter, against stand-ins of two named releases.

- ``torchtitan_v0_2_2``: ``torchtitan/components/metrics.py`` of pytorch/torchtitan tag
  v0.2.2 (the version Primus pins): ``MetricsProcessor(job_config, parallel_dims, tag)``,
  ``_get_metrics_rank(parallel_dims, job_config)``;
- ``torchtitan_v0_3_0``: the same file in the PyPI wheel torchtitan 0.3.0:
  ``MetricsProcessor(config, *, parallel_dims, pp_schedule, ...)``,
  ``_get_metrics_rank(*, parallel_dims, pp_schedule)``, ``WandBLogger(log_dir, config_dict, tag)``.

The program reproduces the ``train_step`` tail of ``torchtitan/train.py`` (v0.2.2) /
``trainer.py`` (0.3.0): when ``should_log(step)``, ``metrics_processor.log(step,
global_avg_loss, global_max_loss, grad_norm.item(), extra_metrics={"n_tokens_seen",
"lr"})`` with real torch values; W&B is real (offline) where TorchTitan's WandBLogger is on.
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

PROGRAM = """
import os, types, torch
from torchtitan.components import metrics

env = os.environ
tmp = env["STANDIN_TMP"]
world, pp = int(env.get("WORLD_SIZE", "1")), int(env.get("PP", "1"))
dims = types.SimpleNamespace(pp_enabled=pp > 1, pp=pp, world_size=world, non_data_parallel_size=pp)
schedule = env.get("PP_SCHEDULE", "1F1B")
tb, wb = env.get("TB") == "1", env.get("WB") == "1"
if env["RELEASE"] == "v0.2.2":
    job_config = types.SimpleNamespace(
        metrics=types.SimpleNamespace(log_freq=2, enable_tensorboard=tb, enable_wandb=wb, save_tb_folder="tb",
                                      save_for_all_ranks=False),
        parallelism=types.SimpleNamespace(pipeline_parallel_schedule=schedule),
        job=types.SimpleNamespace(dump_folder=tmp))
    processor = metrics.build_metrics_processor(job_config, dims)
else:
    config = metrics.MetricsProcessor.Config(log_freq=2, enable_tensorboard=tb, enable_wandb=wb)
    processor = metrics.MetricsProcessor(config, parallel_dims=dims, dump_folder=tmp, pp_schedule=schedule)
processor.num_flops_per_token = 1000

torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
lr = 1e-3  # plain SGD: torch.optim's first use imports torch._dynamo (seconds per process)
ntokens_seen = 0
for step in range(1, 5):
    inputs, targets = torch.randn(4, 8), torch.randn(4, 1)
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-lr)
            p.grad = None
    ntokens_seen += 32
    processor.ntokens_since_last_log += 32
    processor.data_loading_times.append(0.001)
    if not processor.should_log(step):
        continue
    global_avg_loss = global_max_loss = loss.detach().item()
    extra_metrics = {"n_tokens_seen": ntokens_seen, "lr": lr}
    processor.log(step, global_avg_loss, global_max_loss, grad_norm.item(), extra_metrics=extra_metrics)
processor.log_validation(0.5, 4)
%s
processor.close()
"""

TORCHTITAN_NAMES = {"loss_metrics/global_avg_loss", "loss_metrics/global_max_loss", "grad_norm", "throughput(tps)",
                    "tflops", "mfu(%)", "n_tokens_seen", "lr", "memory/num_ooms", "time_metrics/end_to_end(s)"}


def test_v0_2_2_tensorboard_only_reports_from_the_first_rank_of_the_last_pipeline_stage(module_server, tmp_path):
    uid = new_workload("tt022")
    results = standins.run_many(*[dict(code=PROGRAM % "", tmp_path=tmp_path / f"r{rank}", roots=["torchtitan_v0_2_2"],
                                      workload=uid, server=module_server, RELEASE="v0.2.2", RANK=rank,
                                      LOCAL_RANK=rank, WORLD_SIZE=2, PP=2, TB=1) for rank in (0, 1)])
    assert results[0].points == []
    last = results[1]
    det = last.detection["detection"]
    assert (det["base"], det["wrapper"], det["method"]) == ("torchtitan", None, "exact")
    assert last.detection["evidence_base"]["torchtitan"]["logging_rank"] == 1
    assert TORCHTITAN_NAMES <= last.names("torchtitan")
    assert last.sources() == {"torchtitan"}
    assert sorted(last.series("loss_metrics/global_avg_loss")) == [1, 2, 4]
    assert last.series("validation_metrics/loss") == {4: 0.5}
    assert last.series("lr") == {1: 1e-3, 2: 1e-3, 4: 1e-3}
    assert {p["rank"] for p in last.points} == {1}
    last.assert_each_point_once()
    last.check_server()


def test_v0_3_0_with_wandb_logger_leaves_the_metrics_to_the_wandb_stream(module_server, tmp_path):
    result = standins.run(PROGRAM % "", tmp_path, ["torchtitan_v0_3_0"],
                         workload=new_workload("tt030wb"), server=module_server,
                         RELEASE="0.3.0", WB=1, TB=1, WANDB_PROJECT="tt")
    det = result.detection["detection"]
    assert (det["base"], det["method"]) == ("torchtitan", "exact")
    assert result.detection["evidence_base"]["torchtitan"]["wandb_logger"] == "on"
    assert result.sources() == {"wandb"}
    assert TORCHTITAN_NAMES <= result.names("wandb")
    assert sorted(result.series("loss_metrics/global_avg_loss", source="wandb")) == [1, 2, 4]
    result.assert_each_point_once()
    result.check_server()


def test_v0_3_0_without_any_logger_reports_itself_and_lets_torchtitan_errors_through(module_server, tmp_path):
    # ZBVZeroBubble logs from rank 0 even under PP; 0.3.0 passes the schedule to __init__ only.
    code = PROGRAM % """
processor.num_flops_per_token = -1
try:
    processor.log(5, 1.0, 1.0, 0.1)
except AssertionError as exc:
    print("FRAMEWORK-ERROR", exc)
"""
    result = standins.run(code, tmp_path, ["torchtitan_v0_3_0"],
                         workload=new_workload("tt030"), server=module_server, RELEASE="0.3.0",
                         RANK=0, WORLD_SIZE=2, PP=2, PP_SCHEDULE="ZBVZeroBubble")
    assert "FRAMEWORK-ERROR num_flops_per_token must be set" in result.stdout
    assert result.detection["detection"]["base"] == "torchtitan"
    assert result.detection["evidence_base"]["torchtitan"]["version"] is None  # "0.0.0+unknown"
    assert TORCHTITAN_NAMES <= result.names("torchtitan")
    assert sorted(result.series("grad_norm")) == [1, 2, 4]
    assert {p["rank"] for p in result.points} == {0}
    assert result.detection["our_errors"] == 0
    result.assert_each_point_once()
    result.check_server()


@pytest.mark.parametrize("version, patched", [("0.1.0", False), ("0.2.2", True), ("0.3.0", True),
                                              ("0.0.0+unknown", True), ("0.4.0", False)])
def test_adapter_enables_itself_only_on_tested_torchtitan_versions(monkeypatch, version, patched):
    import types

    from primus_lens_wandb_exporter.core import patching, registry
    from primus_lens_wandb_exporter.integrations import torchtitan as adapter

    class MetricsProcessor:
        def log(self, step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None):
            pass

    original = MetricsProcessor.__dict__["log"]
    module = types.ModuleType("torchtitan.components.metrics")
    module.MetricsProcessor = MetricsProcessor
    monkeypatch.setitem(sys.modules, "torchtitan", types.SimpleNamespace(__version__=version))
    try:
        registry.run_watch(adapter.TORCHTITAN, None, module)
        assert (MetricsProcessor.__dict__["log"] is not original) is patched
    finally:
        patching._patches[:] = [p for p in patching._patches if p[0] is not MetricsProcessor]
