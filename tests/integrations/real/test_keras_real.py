"""Real Keras 3.15.1 (PyPI) on its torch backend: ``Sequential.fit`` with and without W&B's
``WandbMetricsLogger``.

``fit`` is defined on the backend trainer (``keras/src/backend/torch/trainer.py:175``); the
adapter's patch on ``keras.Model`` shadows it for every model.  Without a W&B callback the
hook reports Keras's epoch logs (``source="keras"``); the independent record is Keras's own
``History``.  With ``wandb.integration.keras.WandbMetricsLogger`` (which imports TensorFlow:
``metrics_logger.py:5``, so that case needs tensorflow-cpu, i.e. the ``real-jax`` stack of ``make test-real``) W&B is the
source, and W&B's ``.wandb`` file is the record.
"""

import importlib.util

import pytest

from helpers.real import assert_points, assert_server_has, require, run_real

require("keras")

from helpers import wandb_oracle  # noqa: E402

PROGRAM = r'''
import json, os
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import keras

callbacks = []
use_wandb = os.environ.get("KERAS_WANDB") == "1"
if use_wandb:
    import wandb
    from wandb.integration.keras import WandbMetricsLogger
    wandb.init(project="keras-real", config={"lr": 0.05})
    callbacks.append(WandbMetricsLogger())

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")).astype("float32")
model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse", metrics=["mae"])
history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks,
                    validation_data=(x[:16], y[:16]))
if use_wandb:
    wandb.finish()
import torch
print("REAL-ORACLE:" + json.dumps({"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
                                    "epochs": history.epoch, "backend": keras.backend.backend(),
                                    "torch": torch.__version__, "callbacks_after": len(callbacks)}))
'''


@pytest.fixture(scope="module")
def plain_fit(module_server, tmp_path_factory):
    return run_real(module_server, tmp_path_factory.mktemp("keras"), "keras-torch", PROGRAM)


def test_fit_reports_the_history_once_per_epoch(plain_fit):
    oracle = plain_fit.oracle()
    assert oracle["backend"] == "torch" and oracle["epochs"] == [0, 1, 2]
    det = plain_fit.detection("pytorch")
    assert (det.get("wrapper"), det.get("base"), det.get("method")) == ("keras", "pytorch", "exact"), det
    wrapper = det["evidence"]["wrapper_frameworks"]["keras"]
    assert (wrapper["version"], wrapper["method"], wrapper["backend"], wrapper["wandb_callback"]) == \
        ("3.15.1", "exact", "torch", "off"), wrapper
    assert "hook:keras.Model.fit" in wrapper["indicators"]
    expected = {(name, epoch): value for name, values in oracle["history"].items()
                for epoch, value in zip(oracle["epochs"], values)}
    assert {name for name, _ in expected} == {"loss", "mae", "val_loss", "val_mae"}
    assert_points(plain_fit.rows, "keras", expected)
    assert_server_has(plain_fit, "keras", expected)
    assert oracle["callbacks_after"] == 0, "the user's callbacks list was changed"


def test_backend_claim_carries_the_backend_version(plain_fit):
    det = plain_fit.detection("pytorch")
    base = det["evidence"]["base_frameworks"]["pytorch"]
    assert base["method"] == "exact" and base["version"] == plain_fit.oracle()["torch"], base


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="W&B's WandbMetricsLogger imports tensorflow (the real-jax stack of make test-real has tensorflow-cpu)")
def test_wandb_metrics_logger_is_mirrored_exactly_from_wandb(module_server, tmp_path):
    run = run_real(module_server, tmp_path, "keras-wandb", PROGRAM, KERAS_WANDB=1)
    det = run.detection("pytorch")
    assert (det.get("wrapper"), det.get("base"), det.get("method")) == ("keras", "pytorch", "exact"), det
    wrapper = det["evidence"]["wrapper_frameworks"]["keras"]
    assert (wrapper["version"], wrapper["wandb_callback"]) == ("3.15.1", "on"), wrapper
    expected = wandb_oracle.wandb_expected_points(run.wandb_run_dir())
    assert {name for name, _ in expected} == {f"epoch/{k}" for k in
                                              ("epoch", "learning_rate", "loss", "mae", "val_loss", "val_mae")}
    assert sorted({step for (name, _), (step, _) in expected.items()}) == [0, 1, 2]
    wandb_oracle.assert_same_points(expected, wandb_oracle.jsonl_points(run.output), "JSONL sink")
    assert {r["source"] for r in run.rows} == {"wandb"}, "a point also came from the keras hook"
    from helpers.e2e import mirrored_points
    wandb_oracle.assert_same_points(expected, mirrored_points(run.server, run.workload, expected), "Lens server")
