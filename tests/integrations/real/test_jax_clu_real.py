"""Real JAX 0.10.2 + CLU 0.0.12 (PyPI) metric writers, as a Flax/CLU training loop uses them.

``clu.metric_writers`` imports TensorFlow unconditionally (``metric_writers/__init__.py:53`` ->
``summary_writer.py:18`` -> ``tf/summary_writer.py``) although clu does not declare it: the
module needs tensorflow(-cpu) installed, else the program fails before our hook.
``create_default_writer(logdir, just_logging=jax.process_index() > 0)`` (``utils.py:113``) is an
``AsyncMultiWriter[LoggingWriter, SummaryWriter]``; a plain ``MultiWriter`` of two
``LoggingWriter``s; two writers of the program's own (``MetricWriter`` subclasses defined after
the import), one of which logs into an active W&B run.  Values are ``jnp.float32`` from a
``jax.jit`` step.  Independent records: the TensorFlow event files CLU's ``SummaryWriter``
wrote, the values the program handed to each writer, and W&B's ``.wandb`` file.
"""

import pytest

from helpers.real import assert_points, assert_server_has, require, run_real

require("jax", "clu", "tensorflow-cpu")

from helpers import wandb_oracle  # noqa: E402

PROGRAM = r'''
import json, os
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax, jax.numpy as jnp
from clu import metric_writers
import wandb

logdir = os.path.join(os.environ["REAL_TMP"], "tb")
writer = metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0)
plain = metric_writers.MultiWriter([metric_writers.LoggingWriter(), metric_writers.LoggingWriter()])
wandb.init(project="clu-real")
written = []  # (name, step, value) the program handed to a writer that is not the W&B one


class UserWriter(metric_writers.MetricWriter):  # all ten abstract methods of the real MetricWriter
    def __init__(self, to_wandb):
        self.to_wandb = to_wandb

    def write_summaries(self, step, values, metadata=None): pass
    def write_images(self, step, images): pass
    def write_videos(self, step, videos): pass
    def write_audios(self, step, audios, *, sample_rate): pass
    def write_texts(self, step, texts): pass
    def write_histograms(self, step, arrays, num_buckets=None): pass
    def write_hparams(self, hparams): pass
    def flush(self): pass
    def close(self): pass

    def write_scalars(self, step, scalars):
        if self.to_wandb:
            wandb.log({f"user/{k}": float(v) for k, v in scalars.items()}, step=step)


to_wandb, own = UserWriter(True), UserWriter(False)
writer.write_hparams({"lr": 0.1})


@jax.jit
def step_fn(w, x):
    loss = jnp.mean((x @ w) ** 2)
    return w - 0.1 * jax.grad(lambda w: jnp.mean((x @ w) ** 2))(w), loss


def write(target, step, scalars, record=True):
    target.write_scalars(step, scalars)
    if record:
        written.extend([k, step, float(v)] for k, v in scalars.items())


w = jnp.ones((4, 1), jnp.float32)
for step in range(1, 6):
    w, loss = step_fn(w, jnp.full((8, 4), 1.0 / step, jnp.float32))
    write(writer, step, {"train_loss": loss, "train_accuracy": jnp.float32(0.1 * step)})
    if step % 5 == 0:
        write(plain, step, {"eval_loss": jnp.float32(0.5)})
    write(to_wandb, step, {"mine": jnp.float32(step)}, record=False)
    write(own, step, {"own_metric": jnp.float32(10 * step)})
writer.flush()
writer.close()
error = None
try:  # real CLU formats a non-float with {v} (logging_writer.py:43): no error, and no point for us
    metric_writers.LoggingWriter().write_scalars(7, {"bad": "not-a-number"})
except Exception as exc:
    error = type(exc).__name__
wandb.finish()

import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
tb = []
for root, _dirs, files in os.walk(logdir):
    for name in files:
        if name.startswith("events.out.tfevents"):
            acc = EventAccumulator(os.path.join(root, name), size_guidance={"tensors": 0})
            acc.Reload()
            for tag in acc.Tags()["tensors"]:
                for e in acc.Tensors(tag):
                    value = tf.make_ndarray(e.tensor_proto)
                    if value.shape == ():
                        tb.append([tag, e.step, float(value)])
print("REAL-ORACLE:" + json.dumps({"tensorboard": tb, "written": written, "error": error,
                                    "writer": type(writer).__name__, "jax": jax.__version__}))
'''


@pytest.fixture(scope="module")
def clu_run(module_server, tmp_path_factory):
    return run_real(module_server, tmp_path_factory.mktemp("clu"), "jax-clu", PROGRAM)


def test_detection_is_jax_exact_with_clu(clu_run):
    det = clu_run.detection("jax")
    assert (det.get("base"), det.get("method")) == ("jax", "exact"), det
    claim = det["evidence"]["base_frameworks"]["jax"]
    assert (claim["version"], claim["library"], claim["clu_version"]) == ("0.10.2", "clu", "0.0.12"), claim
    assert clu_run.oracle()["jax"] == "0.10.2"


def test_each_scalar_is_reported_once_at_the_outermost_writer(clu_run):
    oracle = clu_run.oracle()
    assert oracle["writer"] == "AsyncMultiWriter" and oracle["error"] is None
    written = {(name, step): value for name, step, value in oracle["written"]}
    assert len(written) == len(oracle["written"]) == 5 * 2 + 1 + 5
    # CLU's own record of the default writer: its TensorFlow SummaryWriter's event files.
    tb = {(tag, step): value for tag, step, value in oracle["tensorboard"]}
    assert tb == {k: v for k, v in written.items() if k[0] in ("train_loss", "train_accuracy")}
    clu_rows = [r for r in clu_run.rows if r["source"] == "clu"]
    assert_points(clu_rows, "clu", written)
    assert_server_has(clu_run, "clu", written)


def test_own_writer_that_does_not_log_to_wandb_is_reported(clu_run):
    # The program's own writer, called while a W&B run is active, never calls wandb.log: its
    # scalars reach Lens through the CLU hook (the W&B one is left to the W&B stream, below).
    written = {(name, step): value for name, step, value in clu_run.oracle()["written"] if name == "own_metric"}
    rows = [r for r in clu_run.rows if r["name"] == "own_metric"]
    assert_points(rows, "clu", written)


def test_a_writer_that_logs_to_wandb_is_left_to_wandb(clu_run):
    expected = wandb_oracle.wandb_expected_points(clu_run.wandb_run_dir())
    assert {(name, step) for (name, _), (step, _) in expected.items()} == {("user/mine", s) for s in range(1, 6)}
    wandb_oracle.assert_same_points(expected, wandb_oracle.jsonl_points(clu_run.output), "JSONL sink")
    assert {r["source"] for r in clu_run.rows} == {"clu", "wandb"}
    from helpers.e2e import mirrored_points
    wandb_oracle.assert_same_points(expected, mirrored_points(clu_run.server, clu_run.workload, expected),
                                    "Lens server")
