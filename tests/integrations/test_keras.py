"""Keras adapter (partial support), against a stand-in of keras 3.15.1 (``standins/keras_3``)
and, when Keras is importable, real Keras 3 on its torch backend.

TensorFlow is not installed here, so W&B's ``WandbMetricsLogger`` (built on
``tensorflow.keras``) cannot be imported: the W&B case uses a class standing in for it
(same name, same module path, same ``epoch/*`` logging with ``define_metric``).
"""

import os
import sys

import pytest

# The stand-ins folder is never put on this process's sys.path (it holds directories
# named like real packages); only the programs under test see the stand-in roots.
from helpers import standins  # noqa: E402
from helpers.e2e import module_server, new_workload  # noqa: E402,F401  (a real Lens server per module)

pytest.importorskip("numpy")

FIT = """
import numpy as np
import keras

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 3)).astype("float32")
y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")).astype("float32")
%s
user_callbacks = %s
history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=user_callbacks, validation_data=(x[:8], y[:8]))
print("USER-CALLBACKS-UNCHANGED", user_callbacks is None or len(user_callbacks) == %d)
print("EPOCHS", len(history.history["loss"]))
"""

STANDIN_MODEL = "model = keras.Sequential()\nmodel.compile(learning_rate=0.1)"


def test_fit_without_wandb_callback_reports_epoch_logs(module_server, tmp_path):
    result = standins.run(FIT % (STANDIN_MODEL, "[]", 0), tmp_path, ["keras_3"],
                         workload=new_workload("keras"), server=module_server)
    det = result.detection["detection"]
    assert (det["wrapper"], det["base"], det["method"]) == ("keras", "tensorflow", "exact")
    assert result.detection["evidence_wrapper"]["keras"]["version"] == "3.15.1"
    assert result.names("keras") == {"loss", "mae", "val_loss", "val_mae"}
    assert sorted(result.series("loss")) == [0, 1, 2]
    assert "USER-CALLBACKS-UNCHANGED True" in result.stdout and "EPOCHS 3" in result.stdout
    result.assert_each_point_once()
    result.check_server()


WANDB_LOGGER = """
import types, wandb
wandb.init(project="keras")

class WandbMetricsLogger(keras.callbacks.Callback):
    # Stands in for wandb.integration.keras.WandbMetricsLogger (which imports tensorflow).
    def __init__(self):
        super().__init__()
        wandb.define_metric("epoch/epoch")
        wandb.define_metric("epoch/*", step_metric="epoch/epoch")

    def on_epoch_end(self, epoch, logs=None):
        logs = {f"epoch/{k}": v for k, v in (logs or {}).items()}
        logs["epoch/epoch"] = epoch
        wandb.log(logs)

WandbMetricsLogger.__module__ = "wandb.integration.keras.callbacks.metrics_logger"
from primus_lens_wandb_exporter.integrations import keras as lens_keras
lens_keras.setup_wandb_keras(types.SimpleNamespace(WandbMetricsLogger=WandbMetricsLogger))
"""


def test_fit_with_wandb_metrics_logger_leaves_the_metrics_to_wandb(module_server, tmp_path):
    pytest.importorskip("wandb")
    code = FIT % (STANDIN_MODEL + WANDB_LOGGER, "[WandbMetricsLogger()]", 1) + "wandb.finish()\n"
    result = standins.run(code, tmp_path, ["keras_3"],
                         workload=new_workload("keras-wb"), server=module_server, KERAS_BACKEND="jax")
    det = result.detection["detection"]
    assert (det["wrapper"], det["base"], det["method"]) == ("keras", "jax", "exact")
    assert result.sources() == {"wandb"}
    assert sorted(result.series("epoch/loss", source="wandb")) == [0, 1, 2]
    assert "USER-CALLBACKS-UNCHANGED True" in result.stdout
    result.assert_each_point_once()
    result.check_server()


def test_real_keras_on_torch_backend(module_server, tmp_path):
    keras_path = os.environ.get("LENS_TEST_KERAS_PATH", "")
    probe = os.system(f"PYTHONPATH={keras_path} KERAS_BACKEND=torch {sys.executable} -c 'import keras' 2>/dev/null")
    if probe != 0:
        pytest.skip("keras 3 is not installed (set LENS_TEST_KERAS_PATH to a folder holding it)")
    model = ("model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)])\n"
             "model.compile(optimizer='sgd', loss='mse', metrics=['mae'])")
    extra = {"PYTHONPATH": keras_path} if keras_path else {}
    result = standins.run(FIT % (model, "None", 0), tmp_path, [],
                         workload=new_workload("keras-real"), server=module_server, KERAS_BACKEND="torch",
                         **extra)
    det = result.detection["detection"]
    assert (det["wrapper"], det["base"], det["method"]) == ("keras", "pytorch", "exact")
    assert {"loss", "mae", "val_loss", "val_mae"} <= result.names("keras")
    assert sorted(result.series("loss", source="keras")) == [0, 1, 2]
    result.assert_each_point_once()
    result.check_server()


@pytest.mark.parametrize("version, patched", [("2.15.0", False), ("3.0.0", True), ("3.15.1", True), ("4.0.0", False)])
def test_adapter_enables_itself_only_on_keras_3(version, patched):
    import types

    from primus_lens_wandb_exporter.core import patching, registry
    from primus_lens_wandb_exporter.integrations import keras as adapter

    class Model:
        def fit(self, x=None, y=None, epochs=1, callbacks=None):
            pass

    original = Model.__dict__["fit"]
    module = types.SimpleNamespace(__version__=version, Model=Model, callbacks=types.SimpleNamespace())
    try:
        registry.run_watch(adapter.KERAS, None, module)
        assert (Model.__dict__["fit"] is not original) is patched
    finally:
        patching._patches[:] = [p for p in patching._patches if p[0] is not Model]
