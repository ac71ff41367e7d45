"""Real MaxText 0.2.5 (PyPI) ``MetricLogger``, called as MaxText's trainer calls it.

MaxText on PyPI declares ``Requires-Python >=3.12``; the metric path runs on 3.11, so tox
installs it with ``--ignore-requires-python --no-deps`` plus the modules it imports (requirements/real-jax.txt).
The config is MaxText's own ``pyconfig.initialize([argv0, configs/base.yml, overrides...])``;
the logger is ``MetricLogger(config=, learning_rate_schedule=, start_step=)`` as
``trainers/pre_train/train.py:1286``, ``write_setup_info_to_tensorboard`` (:1293), then per
step ``buffer_and_write_metrics(metrics, step, step_time_delta)`` (:957), an eval pass of
``buffer_and_write_metrics(eval_metrics, eval_step, ..., is_training=False)`` (:942) and
``flush_metrics_and_cleanup()``.  These end in the hooked ``write_metrics(metrics, step,
metric_type)`` with ``train``, ``running_eval`` (a snapshot at the eval step index, not a
training point) and ``eval``.  The model and its train step are not run (no TPU/GPU; a
tiny ``jnp`` loss instead).  Independent records: the TensorBoard event files MaxText wrote
(it skips ``running_eval`` there too) and W&B's ``.wandb`` file when ``enable_wandb``.
"""

import pytest

from helpers.real import assert_points, assert_server_has, require, run_real

require("maxtext", "jax", "tensorflow-cpu", module="maxtext.common.metric_logger")

from helpers import wandb_oracle  # noqa: E402

PROGRAM = r'''
import datetime, json, os
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax, jax.numpy as jnp
import maxtext
from maxtext.configs import pyconfig
from maxtext.common import metric_logger

out = os.environ["REAL_TMP"]
wandb_on = os.environ.get("MT_WANDB") == "1"
config = pyconfig.initialize([
    "train.py", os.path.join(os.path.dirname(maxtext.__file__), "configs", "base.yml"), "run_name=real",
    f"base_output_directory={out}", "steps=5", "hardware=cpu", "enable_tensorboard=True",
    f"enable_wandb={wandb_on}", "wandb_project_name=maxtext-real", "wandb_run_name=real", "log_period=2",
    "enable_checkpointing=False", "skip_jax_distributed_system=True", "dataset_type=synthetic",
])
schedule = lambda step: jnp.float32(1e-3 * (step + 1) / 5)
logger = metric_logger.MetricLogger(config=config, learning_rate_schedule=schedule, start_step=0)
logger.write_setup_info_to_tensorboard({"w": jnp.ones((4, 4))})

last = datetime.datetime.now()
for step in range(5):
    loss = jnp.float32(2.0 / (step + 1))
    metrics = {"scalar": {"learning/loss": loss, "learning/lm_loss": loss, "learning/perplexity": jnp.exp(loss),
                          "learning/z_loss": jnp.float32(0.0), "learning/moe_lb_loss": jnp.float32(0.0),
                          "learning/total_weights": jnp.float32(512.0), "learning/grad_norm": jnp.float32(1.5),
                          "learning/raw_grad_norm": jnp.float32(1.6), "learning/param_norm": jnp.float32(4.0)},
               "scalars": {}}
    if step == 3:  # an eval pass of 2 eval steps before this train step's metrics (train.py:930-945)
        logger.mark_eval_loop_start()
        for eval_step in range(2):
            ev = {"scalar": {"evaluation/total_loss": jnp.float32(100.0), "evaluation/total_weights": jnp.float32(64.0)}}
            logger.buffer_and_write_metrics(ev, eval_step, step_time_delta=datetime.timedelta(seconds=0.01),
                                            is_training=False)
    now = datetime.datetime.now()
    logger.buffer_and_write_metrics(metrics, step, now - last)
    last = now
logger.flush_metrics_and_cleanup()
if wandb_on:
    import wandb
    wandb.finish()

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
tb = []
for root, _dirs, files in os.walk(out):
    for name in files:
        if name.startswith("events.out.tfevents"):
            acc = EventAccumulator(os.path.join(root, name), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags()["scalars"]:
                tb.extend([tag, e.step, e.value] for e in acc.Scalars(tag))
print("REAL-ORACLE:" + json.dumps({"tensorboard": tb, "maxtext": maxtext.__version__, "jax": jax.__version__}))
'''


@pytest.fixture(scope="module")
def tb_run(module_server, tmp_path_factory):
    return run_real(module_server, tmp_path_factory.mktemp("mt"), "maxtext", PROGRAM)


def assert_detected(run, wandb_logger):
    det = run.detection("maxtext")
    assert (det.get("base"), det.get("method")) == ("maxtext", "exact"), det
    claim = det["evidence"]["base_frameworks"]["maxtext"]
    assert (claim["version"], claim["wandb_logger"], claim["jax_version"]) == ("0.2.5", wandb_logger, "0.10.2"), claim
    assert "hook:maxtext.common.metric_logger.MetricLogger.write_metrics" in claim["indicators"], claim


def test_metric_logger_reports_what_tensorboard_got(tb_run):
    assert_detected(tb_run, "off")
    scalars = tb_run.oracle()["tensorboard"]
    expected = {(tag, step): value for tag, step, value in scalars}
    assert len(expected) == len(scalars), "TensorBoard holds a point twice"
    train = {name for (name, _) in expected if not name.startswith("eval/")}
    evals = {(name, step) for (name, step) in expected if name.startswith("eval/")}
    assert {step for (name, step) in expected if name in train} == {0, 1, 2, 3, 4}
    assert len(train) == 15 and len(evals) == 14 and {s for _, s in evals} == {3}, (train, evals)
    assert_points(tb_run.rows, "maxtext", expected)  # running_eval snapshots are not points
    assert_server_has(tb_run, "maxtext", expected)


def test_enable_wandb_run_is_mirrored_exactly_from_wandb(module_server, tmp_path):
    run = run_real(module_server, tmp_path, "maxtext-wandb", PROGRAM, MT_WANDB=1)
    assert_detected(run, "on")
    expected = wandb_oracle.wandb_expected_points(run.wandb_run_dir())
    # W&B dropped MaxText's running_eval rows (their step goes backwards); it kept what TensorBoard has.
    tb = {(tag, step) for tag, step, _ in run.oracle()["tensorboard"]}
    assert {(name, step) for (name, _), (step, _) in expected.items()} == tb
    wandb_oracle.assert_same_points(expected, wandb_oracle.jsonl_points(run.output), "JSONL sink")
    assert {r["source"] for r in run.rows} == {"wandb"}, "a point also came from the maxtext hook"
    from helpers.e2e import mirrored_points
    wandb_oracle.assert_same_points(expected, mirrored_points(run.server, run.workload, expected), "Lens server")
