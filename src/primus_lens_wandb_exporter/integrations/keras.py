"""Keras adapter (partial support, as the user guide says).

- ``keras.Model.fit`` is wrapped when ``keras`` is imported.  If the call's callbacks
  include W&B's Keras callbacks (``WandbMetricsLogger``, ``WandbCallback``), W&B is the
  source of the metrics (``epoch/*`` / ``batch/*`` with their own step metrics) and we
  only claim.  Otherwise a :class:`LensKerasCallback` is appended to a *copy* of the
  callbacks list: each epoch's ``logs`` (``loss``, ``accuracy``, ``val_loss`` ...) are
  reported under ``source="keras"`` with ``step=epoch``.
- ``wandb.integration.keras``: ``WandbMetricsLogger.__init__`` claims Keras on
  TensorFlow exactly (that callback is built on ``tensorflow.keras``), for programs that
  use ``tf.keras`` without importing the ``keras`` package by name.

Claims: wrapper ``keras``, base from ``keras.backend.backend()`` (``tensorflow``,
``jax``, ``torch`` -> ``pytorch``).  Not covered: custom training loops that never call
``fit`` (their ``wandb.log`` calls are still mirrored by the raw wandb patch).
"""

import sys

from ..core import patching
from ..core.integration import BASE, WRAPPER, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder

NAME = "keras"


class _State:
    """What the adapter remembers per process (``KERAS.state``)."""

    def __init__(self):
        self.claimed = set()         # (via, backend, wandb_on) claimed
        self.callback_class = {}     # id(keras module) -> LensKerasCallback


KERAS = Integration(
    name=NAME, module=__name__, state=_State(),
    frameworks=(Framework(NAME, WRAPPER, ("keras", "tf-keras")),
                Framework("tensorflow", BASE, ("tensorflow", "tensorflow-cpu"), (Hint("module", "tensorflow", 0.4),))),
    watches=(Watch("keras"),),
    #: Keras releases whose fit/callback protocol we reproduced (3.0 .. 3.x, compared on two parts).
    versions=VersionRange((3, 0), (3, 100), unknown="allow"),
    version_of=lambda keras_module: getattr(keras_module, "__version__", None))
KERAS_WANDB = Integration(name="keras_wandb", family=NAME, module=__name__,
                          watches=(Watch("wandb.integration.keras", "setup_wandb_keras"),))
INTEGRATIONS = (KERAS, KERAS_WANDB)

_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "pytorch", "numpy": None}
_WANDB_CALLBACKS = ("WandbMetricsLogger", "WandbCallback", "WandbModelCheckpoint")


def _claim(keras_module, via, wandb_on):
    version = getattr(keras_module, "__version__", None)
    backend = None
    try:
        backend = keras_module.backend.backend()
    except Exception:  # a read of the user's Keras: the claim goes out without a backend
        pass
    key = (via, backend, wandb_on)
    if key in KERAS.state.claimed:
        return
    KERAS.state.claimed.add(key)
    recorder = get_recorder()
    indicator = f"hook:{via}"
    recorder.claim(NAME, "wrapper", version=version, indicators=(indicator,), backend=str(backend),
                   wandb_callback="on" if wandb_on else "off")
    base = _BACKENDS.get(str(backend))
    if base:
        # The backend's package is imported by Keras itself once it runs on it: its version
        # is read from there (never imported by us).
        backend_module = sys.modules.get(str(backend))
        recorder.claim(base, "base", version=getattr(backend_module, "__version__", None),
                       indicators=(indicator, f"keras.backend={backend}"))


def _is_wandb_callback(callback):
    cls = type(callback)
    return cls.__name__ in _WANDB_CALLBACKS and (cls.__module__ or "").startswith("wandb")


def _lens_callback(keras_module):
    cls = KERAS.state.callback_class.get(id(keras_module))
    if cls is not None:
        return cls
    base = keras_module.callbacks.Callback

    class LensKerasCallback(base):
        """Reports each epoch's ``logs`` to Lens (used when no W&B callback is present)."""

        @patching.guard("keras.on_epoch_end")
        def on_epoch_end(self, epoch, logs=None):
            if logs:
                get_recorder().record(dict(logs), int(epoch), source=NAME)

    cls = KERAS.state.callback_class[id(keras_module)] = LensKerasCallback
    return cls


def _with_lens_callback(keras_module, signature, model, args, kwargs):
    """Claim; and unless W&B's callback reports, (args, kwargs) with a LensKerasCallback appended."""
    bound = signature.bind(model, *args, **kwargs)
    callbacks = bound.arguments.get("callbacks")
    listed = list(callbacks) if isinstance(callbacks, (list, tuple)) else None
    from .wandb import raw_wandb_active

    wandb_on = any(_is_wandb_callback(cb) for cb in (listed or ())) and raw_wandb_active()
    _claim(keras_module, "keras.Model.fit", wandb_on)
    if not wandb_on and (callbacks is None or listed is not None):
        if not any(type(cb).__name__ == "LensKerasCallback" for cb in (listed or ())):
            bound.arguments["callbacks"] = (listed or []) + [_lens_callback(keras_module)()]
            return bound.args[1:], bound.kwargs
    return None


def _make_fit(keras_module, signature):
    def make(original):
        def fit(self, *args, **kwargs):
            changed = patching.call_ours("keras.Model.fit", _with_lens_callback, keras_module, signature,
                                         self, args, kwargs)
            if changed is not None:
                args, kwargs = changed
            return original(self, *args, **kwargs)  # Keras's own errors propagate untouched
        return fit
    return make


def setup(keras_module):
    """``keras`` was imported: wrap ``keras.Model.fit`` (the registry's gate passed)."""
    import inspect

    model = getattr(keras_module, "Model", None)
    fit = getattr(model, "fit", None)
    if fit is None or not hasattr(keras_module, "callbacks"):
        raise NotEnabled("no Model.fit")
    signature = inspect.signature(fit)
    if "callbacks" not in signature.parameters:
        raise NotEnabled("Model.fit takes no callbacks")
    wrapper = patching.patch(model, "fit", _make_fit(keras_module, signature))
    get_logger().debug("Keras hook installed (Model.fit)")
    return wrapper


def _claim_from_wandb_logger(callback, *args, **kwargs):
    keras_module = sys.modules.get("keras") or sys.modules.get("tensorflow.keras")
    if keras_module is not None:
        _claim(keras_module, f"wandb.integration.keras.{type(callback).__name__}", True)
    else:
        get_recorder().claim("tensorflow", "base", indicators=("hook:wandb.integration.keras",))


# W&B's own errors propagate; ours are counted.
_make_wandb_logger_init = patching.then("wandb.integration.keras", _claim_from_wandb_logger)


def setup_wandb_keras(module):
    """``wandb.integration.keras`` was imported (the registry's gate passed)."""
    for name in ("WandbMetricsLogger", "WandbCallback"):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and "__init__" in vars(cls):
            patching.patch(cls, "__init__", _make_wandb_logger_init)
    return True

