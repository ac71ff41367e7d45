"""Real TorchTitan 0.3.0 (PyPI): the ``MetricsProcessor`` built as the trainer builds it.

``torchtitan/trainer.py:378`` builds it with ``config.metrics.build(parallel_dims=...,
dump_folder=..., pp_schedule=..., config_dict=..., has_quantization=...)``
(``Configurable.Config.build`` -> ``MetricsProcessor(config=replace(cfg), **kwargs)``), with the
real ``LoggerContainer`` / ``WandBLogger`` / ``TensorBoardLogger`` and a one-process gloo group
(``_build_metric_logger`` asks ``torch.distributed.get_rank()``).  The loop calls
``log(step, avg, max, grad_norm, extra_metrics={...})`` as ``trainer.py:1004`` and
``log_validation(loss=, step=)`` as ``components/validate.py:351``.

``torchtitan.trainer`` itself cannot be imported on CPU (``import triton`` in
``distributed/minimal_async_ep/kernels.py``), so the Trainer is not run.  The one CPU shim:
``metrics.build_device_memory_monitor`` (``DeviceMemoryMonitor`` calls ``torch.cuda``) returns
zeros.  Independent records: W&B's ``.wandb`` file (``wandb_oracle``) and the TensorBoard
event files TorchTitan wrote.
"""

import pytest

from helpers.real import assert_points, assert_server_has, require, run_real

require("torchtitan")

from helpers import wandb_oracle  # noqa: E402

PROGRAM = r'''
import glob, json, os
import torch
import torch.distributed as dist

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
# One process: its store listens on any free port (a port made from the pid was taken by
# another socket once, in a clean-clone CI run: EADDRINUSE).
os.environ.setdefault("MASTER_PORT", "0")
dist.init_process_group("gloo", rank=0, world_size=1)

from torchtitan.components import metrics as tt_metrics
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.distributed import ParallelDims


class CpuMemoryMonitor:  # DeviceMemoryMonitor (metrics.py:38) needs CUDA; the only CPU shim
    device_name = "cpu"

    def get_peak_stats(self):
        return tt_metrics.DeviceMemStats(0.0, 0.0, 0.0, 0.0, 0, 0)

    def reset_peak_stats(self):
        pass


tt_metrics.build_device_memory_monitor = CpuMemoryMonitor

wb, tb, own = (os.environ.get(k) == "1" for k in ("TT_WANDB", "TT_TB", "TT_OWN_LOGGER"))
dump = os.environ["REAL_TMP"]
config = MetricsProcessor.Config(log_freq=1, enable_wandb=wb, enable_tensorboard=tb)
processor = config.build(  # trainer.py:378-384
    parallel_dims=ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=1, pp=1, ep=1, world_size=1),
    dump_folder=dump, pp_schedule="1F1B",
    config_dict={"metrics": config.to_dict(), "training": {"lr": 1e-3}}, has_quantization=False)
processor.num_flops_per_token = 1000  # trainer.py:390


class OwnLogger:  # a program's own logger (e.g. MLflow), not one of torchtitan's classes
    def __init__(self):
        self.seen = []

    def log(self, metrics, step):
        self.seen.append((step, dict(metrics)))

    def close(self):
        pass


if own:
    processor.logger = OwnLogger()

torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
lr, seen = 1e-3, 0
for step in range(1, 6):  # trainer.py: self.step += 1 before train_step, then log(self.step, ...)
    x, y = torch.randn(4, 8), torch.randn(4, 1)
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-lr)
            p.grad = None
    seen += 32
    processor.ntokens_since_last_log += 32
    processor.data_loading_times.append(0.001)
    if processor.should_log(step):
        v = loss.detach().item()
        processor.log(step, v, v, float(grad_norm.item()), extra_metrics={"n_tokens_seen": seen, "lr": lr})
if own:
    processor.log_validation(loss=0.5, step=5, extra_metrics={"validation_metrics/perplexity": 1.6487})
else:
    processor.log_validation(loss=0.5, step=5)  # validate.py:351
processor.close()
dist.destroy_process_group()

oracle = {}
if tb:  # what TorchTitan's TensorBoardLogger wrote (SummaryWriter event files)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for path in glob.glob(os.path.join(dump, "tb", "**", "events.out.tfevents.*"), recursive=True):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                oracle.setdefault("tensorboard", []).append([tag, event.step, event.value])
if own:
    oracle["own_logger"] = [[name, step, value] for step, m in processor.logger.seen for name, value in m.items()]
print("REAL-ORACLE:" + json.dumps(oracle))
'''


@pytest.fixture(scope="module")
def wandb_and_tb(module_server, tmp_path_factory):
    return run_real(module_server, tmp_path_factory.mktemp("tt-wb"), "torchtitan-wb", PROGRAM,
                    TT_WANDB=1, TT_TB=1)


@pytest.fixture(scope="module")
def tb_only(module_server, tmp_path_factory):
    return run_real(module_server, tmp_path_factory.mktemp("tt-tb"), "torchtitan-tb", PROGRAM,
                    TT_WANDB=0, TT_TB=1)


@pytest.fixture(scope="module")
def own_logger(module_server, tmp_path_factory):
    # A fixture, so that a program that fails to run is an error, never taken for the xfail.
    return run_real(module_server, tmp_path_factory.mktemp("tt-own"), "torchtitan-own", PROGRAM,
                    TT_WANDB=0, TT_TB=0, TT_OWN_LOGGER=1)


TRAIN_NAMES = {
    "grad_norm", "loss_metrics/global_avg_loss", "loss_metrics/global_max_loss", "lr", "n_tokens_seen",
    "memory/max_active(%)", "memory/max_active(GiB)", "memory/max_reserved(%)", "memory/max_reserved(GiB)",
    "memory/num_alloc_retries", "memory/num_ooms", "mfu(%)", "tflops", "throughput(tps)",
    "time_metrics/data_loading(%)", "time_metrics/data_loading(s)", "time_metrics/end_to_end(s)"}
VALIDATION_NAMES = {
    "validation_metrics/loss", "validation_metrics/throughput(tps)",
    "validation_metrics/memory/max_active(%)", "validation_metrics/memory/max_active(GiB)",
    "validation_metrics/memory/max_reserved(%)", "validation_metrics/memory/max_reserved(GiB)"}


def assert_detected(run, wandb_logger):
    det = run.detection("torchtitan")
    assert (det.get("base"), det.get("method")) == ("torchtitan", "exact"), det
    claim = det["evidence"]["base_frameworks"]["torchtitan"]
    assert claim["version"] == "0.3.0" and claim["method"] == "exact", claim
    assert claim["wandb_logger"] == wandb_logger and claim["logging_rank"] == 0, claim
    assert "hook:torchtitan.components.metrics.MetricsProcessor.log" in claim["indicators"], claim


def test_wandb_logger_run_is_mirrored_exactly_from_wandb(wandb_and_tb):
    """WandBLogger on: W&B's own record is the truth; the exporter mirrors it and adds nothing."""
    assert_detected(wandb_and_tb, "on")
    expected = wandb_oracle.wandb_expected_points(wandb_and_tb.wandb_run_dir())
    names = {name for name, _row in expected}
    assert names == TRAIN_NAMES | VALIDATION_NAMES, names ^ (TRAIN_NAMES | VALIDATION_NAMES)
    assert len(expected) == 17 * 5 + 6
    wandb_oracle.assert_same_points(expected, wandb_oracle.jsonl_points(wandb_and_tb.output), "JSONL sink")
    assert {r["source"] for r in wandb_and_tb.rows} == {"wandb"}, "a point also came from the torchtitan hook"
    from helpers.e2e import mirrored_points
    wandb_oracle.assert_same_points(expected, mirrored_points(wandb_and_tb.server, wandb_and_tb.workload, expected),
                                    "Lens server")


def test_tensorboard_only_run_reports_what_tensorboard_got(tb_only):
    """No W&B: the hook reports TorchTitan's own dict, exactly what its TensorBoardLogger wrote."""
    assert_detected(tb_only, "off")
    scalars = tb_only.oracle()["tensorboard"]
    expected = {(tag, step): value for tag, step, value in scalars}
    assert len(expected) == len(scalars) == 17 * 5 + 6, "TensorBoard holds a point twice"
    assert {tag for tag, _ in expected} == TRAIN_NAMES | VALIDATION_NAMES
    # TensorBoard stores float32: compare at float32 precision.
    assert_points(tb_only.rows, "torchtitan", expected, rel=1e-6)
    assert_server_has(tb_only, "torchtitan", expected, rel=1e-6)


def test_own_logger_gets_validation_extra_metrics(own_logger):
    """A logger that is not one of TorchTitan's classes: the hook reports from the arguments.
    ``log_validation(loss, step, extra_metrics=None)`` (metrics.py:539) merges ``extra_metrics``
    into the dict, so they must be reported too, as they are for ``log``."""
    run = own_logger
    assert_detected(run, "off")
    got = {(r["name"], r["step"]) for r in run.rows if r["source"] == "torchtitan"}
    # What the train fallback knows from log()'s arguments, every step; validation at step 5.
    for step in range(1, 6):
        assert {(n, step) for n in ("loss_metrics/global_avg_loss", "loss_metrics/global_max_loss", "grad_norm",
                                    "n_tokens_seen", "lr")} <= got
    own = run.oracle()["own_logger"]
    assert ["validation_metrics/perplexity", 5, 1.6487] in own  # TorchTitan handed it to the logger
    assert ("validation_metrics/loss", 5) in got
    assert ("validation_metrics/perplexity", 5) in got
