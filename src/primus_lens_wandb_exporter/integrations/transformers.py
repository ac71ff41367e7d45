"""Hugging Face ``transformers.Trainer`` integration.

Zero code: when ``transformers.trainer`` is imported, ``Trainer.__init__`` is
wrapped so that, after the original ran, a ``LensTrainerCallback`` is added to
the trainer (``trainer.add_callback``) unless one is already there (the user may
pass one explicitly: ``Trainer(callbacks=[LensTrainerCallback()])``).

The callback:

- claims ``hf_trainer`` (wrapper) and the base layer from the run (DeepSpeed
  plugin / ``args.deepspeed`` -> ``deepspeed``; FSDP -> ``pytorch`` with strategy
  ``fsdp``; else ``pytorch``), exactly;
- when no ``WandbCallback`` feeds W&B, reports every ``Trainer.log`` call itself
  (``on_log``: HF's own key names, step = ``state.global_step``, world process
  zero only, data source ``transformers``), the final ``train_runtime``,
  ``train_samples_per_second`` ... included.  With ``report_to=["wandb"]`` the W&B
  stream (reported by the raw wandb patch, stepped by ``train/global_step``) is
  the source, and the callback only claims.

HF's ``CallbackHandler`` catches nothing, so every callback method here is
exception-safe: our error never reaches training.
"""

import sys
import weakref

from ..core import patching
from ..core.integration import BASE, WRAPPER, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder
from .wandb import raw_wandb_active

NAME = "hf_trainer"
SOURCE = "transformers"
STEP_SOURCE = "state.global_step"


class _State:
    """``TRANSFORMERS.state``: the LensTrainerCallback class (subclasses transformers.TrainerCallback)."""

    def __init__(self):
        self.callback_class = None


TRANSFORMERS = Integration(
    name="transformers", module=__name__, state=_State(),
    frameworks=(Framework(NAME, WRAPPER, ("transformers",), (Hint("module", "transformers.trainer", 0.6),)),
                Framework("transformers", BASE, ("transformers",), (Hint("wandb_config", "_name_or_path", 0.4),))),
    watches=(Watch("transformers.trainer"),),
    # Tested: 5.24.0 (tests/integrations/test_transformers.py).  A source checkout without a
    # version is taken as current.
    versions=VersionRange((4, 40, 0), (6, 0, 0), unknown="allow"),
    version_of=lambda module: transformers_version(), exports=("LensTrainerCallback",))
INTEGRATIONS = (TRANSFORMERS,)



def transformers_version():
    return str(getattr(sys.modules.get("transformers"), "__version__", "") or "") or None


# --------------------------------------------------------------------------- what the run is


def _is_wandb_callback(cb):
    return any(cls.__name__ == "WandbCallback" for cls in type(cb).__mro__)


def _wandb_feeds(trainer, args):
    """True when HF's WandbCallback sends this trainer's logs to a W&B run we already mirror."""
    if not raw_wandb_active():
        return False
    handler = getattr(trainer, "callback_handler", None) if trainer is not None else None
    if handler is not None:
        return any(_is_wandb_callback(cb) for cb in getattr(handler, "callbacks", ()))
    report_to = getattr(args, "report_to", None) or ()
    if isinstance(report_to, str):
        report_to = [report_to]
    return "wandb" in report_to or "all" in report_to


def _base_of(trainer, args):
    """(base framework, strategy indicator) of the run."""
    if trainer is not None:
        if getattr(trainer, "is_deepspeed_enabled", False):
            return "deepspeed", "deepspeed"
        if getattr(trainer, "is_fsdp_enabled", False):
            return "pytorch", "fsdp"
    if getattr(args, "deepspeed", None):
        return "deepspeed", "deepspeed"
    if getattr(args, "fsdp", None):
        return "pytorch", "fsdp"
    dist_type = str(getattr(getattr(args, "distributed_state", None), "distributed_type", "") or "")
    if "DEEPSPEED" in dist_type:
        return "deepspeed", "deepspeed"
    if "FSDP" in dist_type:
        return "pytorch", "fsdp"
    world = int(getattr(args, "world_size", 1) or 1)
    return "pytorch", ("ddp" if world > 1 else "single_process")


def _base_version(base):
    if base == "deepspeed":
        return getattr(sys.modules.get("deepspeed"), "__version__", None)
    return getattr(sys.modules.get("torch"), "__version__", None)


# --------------------------------------------------------------------------- the callback


class _LensTrainerCallbackMixin:
    """Reports HF ``Trainer`` logs to Lens and claims the framework (never raises into training)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lens_trainer = None
        self._lens_claimed = False
        self._lens_silent = False

    def _lens_bind(self, trainer):
        self._lens_trainer = weakref.ref(trainer)

    def _lens_get_trainer(self):
        ref = self._lens_trainer
        return ref() if ref is not None else None

    def _lens_claim(self, args):
        if self._lens_claimed:
            return
        self._lens_claimed = True
        trainer = self._lens_get_trainer()
        base, strategy = _base_of(trainer, args)
        wandb = _wandb_feeds(trainer, args)
        common = dict(rank=int(getattr(args, "process_index", 0) or 0),
                      world_size=int(getattr(args, "world_size", 1) or 1),
                      strategy=strategy, step_source=STEP_SOURCE)
        recorder = get_recorder()
        recorder.claim(NAME, "wrapper", version=transformers_version(),
                       indicators=("transformers.Trainer", f"strategy:{strategy}"),
                       metrics_via="wandb" if wandb else "callback", **common)
        recorder.claim(base, "base", version=_base_version(base),
                       indicators=(f"hf_trainer:{strategy}",), **common)
        get_logger().debug("HF Trainer adapter: base=%s strategy=%s metrics via %s",
                           base, strategy, "wandb" if wandb else "LensTrainerCallback")

    def on_init_end(self, args, state, control, **kwargs):
        return None  # claimed once the trainer is built (the zero-code patch) or first used

    @patching.guard("transformers LensTrainerCallback.on_train_begin")
    def on_train_begin(self, args, state, control, **kwargs):
        self._lens_claim(args)
        return None

    @patching.guard("transformers LensTrainerCallback.on_log")
    def on_log(self, args, state, control, logs=None, **kwargs):
        self._lens_claim(args)
        if self._lens_silent or not logs or not getattr(state, "is_world_process_zero", True):
            return None
        if _wandb_feeds(self._lens_get_trainer(), args):
            return None  # the W&B stream is the source
        get_recorder().record(dict(logs), int(getattr(state, "global_step", 0) or 0), source=SOURCE,
                              rank=int(getattr(args, "process_index", 0) or 0))
        return None


def _callback_class():
    if TRANSFORMERS.state.callback_class is None:
        from transformers.trainer_callback import TrainerCallback

        TRANSFORMERS.state.callback_class = type("LensTrainerCallback", (_LensTrainerCallbackMixin, TrainerCallback),
                      {"__module__": __name__, "__qualname__": "LensTrainerCallback",
                       "__doc__": _LensTrainerCallbackMixin.__doc__})
    return TRANSFORMERS.state.callback_class


def __getattr__(name):
    # Built on first use so that importing this module never imports transformers.
    if name == "LensTrainerCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- the zero-code patch


def attach(trainer):
    """Make sure ``trainer`` has exactly one LensTrainerCallback, bound to it; claim the run."""
    handler = getattr(trainer, "callback_handler", None)
    if handler is None:
        return None
    ours = [cb for cb in handler.callbacks if isinstance(cb, _LensTrainerCallbackMixin)]
    if not ours:
        callback = _callback_class()()
        callbacks = handler.callbacks
        # Before HF's progress/printer callback, which pops ``total_flos`` from the shared logs
        # dict: we see the same keys as a reporting callback (WandbCallback) does.
        position = next((i for i, cb in enumerate(callbacks)
                         if type(cb).__name__ in ("ProgressCallback", "PrinterCallback")), None)
        if position is None:
            trainer.add_callback(callback)
        else:
            callbacks.insert(position, callback)
        ours = [callback]
    for callback in ours:
        callback._lens_bind(trainer)
    # With several (a user added two), only the first reports; the others stay silent.
    for extra in ours[1:]:
        extra._lens_claimed = True
        extra._lens_silent = True
    ours[0]._lens_claim(trainer.args)
    return ours[0]


# The user's errors propagate unchanged; ours are counted.
_make_init = patching.then("transformers Trainer.__init__", lambda trainer, *args, **kwargs: attach(trainer))


def setup(module):
    """``transformers.trainer`` was imported (the registry's gate passed)."""
    trainer_cls = getattr(module, "Trainer", None)
    if trainer_cls is None:
        raise NotEnabled("transformers.trainer has no Trainer")
    patching.patch(trainer_cls, "__init__", _make_init)
    get_logger().debug("HF Trainer hook installed (transformers %s, Trainer.__init__ patched)",
                       transformers_version())
    return trainer_cls
