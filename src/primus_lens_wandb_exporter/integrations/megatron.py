"""Megatron-LM (``training_log``) and Megatron-Bridge (``Callback``) adapters.

Megatron-LM has no callback API: every iteration, on every rank, ``train()`` calls the
module global ``megatron.training.training.training_log``.  We wrap it when the module
is imported, bind its arguments **by name** (the positional order changed between
releases: core_v0.15 has ``decoupled_learning_rate`` 4th, later releases dropped it and
added ``max_attention_logit``) and chain whatever wrapper is already there (Primus puts
its own around it; whichever of us wraps first, both run).

Exactly once: Megatron writes its per-iteration values to W&B only when a TensorBoard
writer *and* a W&B writer exist on this rank (the last one).  Then the W&B stream is
the source (the raw wandb patch reports it, with Megatron's names and
``step=iteration``) and this adapter only claims.  Every value W&B does not receive in
this run (W&B gated off, or a flag such as ``--log-loss-scale-to-tensorboard`` unset) is
reported here, under ``source="megatron"`` with the same names Megatron gives it, from
the last rank, ``step=iteration``.

Megatron-Bridge: a :class:`LensBridgeCallback` is added to every ``CallbackManager``
that ``normalize_callbacks`` returns (``pretrain(..., callbacks=...)`` goes through it),
so Bridge runs are claimed exactly without a line of user code.
"""

import inspect
import os
import sys

from ..core import patching
from ..core.detection import dist_version
from ..core.identity import dist_rank_world
from ..core.integration import BASE, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder
from .wandb import raw_wandb_active

NAME = "megatron"
FRAMEWORK = Framework(NAME, BASE, ("megatron-core", "megatron-lm"), (
    Hint("module", "megatron.training", 0.75),
    Hint("module", "megatron.core", 0.6),
    Hint("env", "MEGATRON_LM_PATH", 0.4),
    Hint("wandb_config", "tensor_model_parallel_size", 0.5),
    Hint("wandb_config", "pipeline_model_parallel_size", 0.4),
))
BRIDGE_FRAMEWORK = Framework("megatron_bridge", BASE, ("megatron-bridge",), (Hint("module", "megatron.bridge", 0.6),))


class _BridgeState:
    """``BRIDGE.state``: the LensBridgeCallback class, built from the imported ``Callback``."""

    def __init__(self):
        self.callback_class = None


# Source checkouts often carry no version: unknown versions are allowed (the structural checks decide).
MEGATRON = Integration(
    name=NAME, module=__name__, frameworks=(FRAMEWORK,), watches=(Watch("megatron.training.training"),),
    #: megatron-core versions whose ``training_log`` we reproduced and tested (core_v0.15.0 .. 0.20 / HEAD 2026-08).
    versions=VersionRange((0, 15), (0, 21), unknown="allow"), version_of=lambda module: megatron_version(),
    what="megatron-core")
BRIDGE = Integration(
    name="megatron_bridge", family=NAME, module=__name__, state=_BridgeState(), frameworks=(BRIDGE_FRAMEWORK,),
    watches=(Watch("megatron.bridge.training.callbacks", "setup_bridge"),),
    #: Bridge releases whose ``callbacks`` module we reproduced (v0.5 .. 0.9 / HEAD 2026-08).
    versions=VersionRange((0, 3), (0, 10), unknown="allow"), version_of=lambda module: _bridge_version(),
    what="megatron-bridge")
INTEGRATIONS = (MEGATRON, BRIDGE)

_MARK = "_primus_lens_megatron"
_TRAINING_LOG = "training_log"

# training_log argument -> the name Megatron gives the value in TensorBoard / W&B.
_SCALAR_ARGS = (
    ("learning_rate", "learning-rate"),
    ("decoupled_learning_rate", "decoupled-learning-rate"),
    ("loss_scale", "loss-scale"),
    ("grad_norm", "grad-norm"),
    ("num_zeros_in_grad", "num-zeros"),
    ("params_norm", "params-norm"),
    ("max_attention_logit", "max_attention_logit"),
)
# Values Megatron sends to W&B only when an ``args`` flag is set (absent flag: always sent).
_WANDB_FLAG = {"loss-scale": "log_loss_scale_to_tensorboard", "max_attention_logit": "log_max_attention_logit"}
# Values Megatron never sends to W&B (TensorBoard only).
_NEVER_TO_WANDB = frozenset({"decoupled-learning-rate"})


def megatron_version():
    """megatron-core's version, from its already-imported ``package_info`` or the metadata."""
    info = sys.modules.get("megatron.core.package_info")
    text = getattr(info, "__version__", None) if info is not None else None
    return text or dist_version(FRAMEWORK)


def dist_ranks(args_obj=None):
    """(rank, world_size): torch.distributed when initialised, else Megatron's args, else env."""
    from_dist = dist_rank_world()
    if from_dist is not None:
        return from_dist
    rank = getattr(args_obj, "rank", None)
    world = getattr(args_obj, "world_size", None)
    if isinstance(rank, int) and isinstance(world, int):
        return rank, world
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


# --------------------------------------------------------------------- Megatron-LM


def _chain(func):
    """Every callable reachable from ``func`` through wrappers (``__wrapped__``, our mark, closures)."""
    seen, queue = set(), [func]
    while queue and len(seen) < 64:
        current = queue.pop(0)
        if id(current) in seen or not callable(current):
            continue
        seen.add(id(current))
        yield current
        for attr in ("__wrapped__", patching.MARK):
            inner = getattr(current, attr, None)
            if inner is not None:
                queue.append(inner)
        for cell in getattr(current, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if inspect.isfunction(value) or inspect.ismethod(value):
                queue.append(value)


def _is_ours(func):
    return any(getattr(f, _MARK, False) for f in _chain(func))


def real_signature(func, module_name):
    """The signature of Megatron's own ``training_log``, also from under wrappers such as
    Primus's ``primus_training_log(*args, **kwargs)``; ``None`` when it cannot be found."""
    for candidate in _chain(func):
        code = getattr(candidate, "__code__", None)
        if code is None or code.co_name != _TRAINING_LOG:
            continue
        if getattr(candidate, "__module__", None) != module_name:
            continue
        try:
            sig = inspect.signature(candidate, follow_wrapped=False)
        except (TypeError, ValueError):
            continue
        kinds = {p.kind for p in sig.parameters.values()}
        if inspect.Parameter.VAR_POSITIONAL in kinds:
            continue
        if "loss_dict" in sig.parameters and "iteration" in sig.parameters:
            return sig
    return None


class ArgReader:
    """Reads named arguments of one call by the function's signature, without
    ``Signature.bind`` (which costs tens of microseconds per call on the hot path)."""

    _POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

    def __init__(self, signature, names):
        params = list(signature.parameters.values())
        positions = {p.name: i for i, p in enumerate(params) if p.kind in self._POSITIONAL}
        self.max_positional = len(positions)
        self.fields = []
        for name in names:
            param = signature.parameters.get(name)
            if param is None:
                continue
            default = None if param.default is inspect.Parameter.empty else param.default
            self.fields.append((name, positions.get(name, -1), param.default is inspect.Parameter.empty, default))

    def read(self, args, kwargs):
        """{name: value} of the wanted arguments; TypeError where Python itself would refuse the call."""
        if len(args) > self.max_positional:
            raise TypeError("too many positional arguments")
        out = {}
        n = len(args)
        for name, index, required, default in self.fields:
            if name in kwargs:
                out[name] = kwargs[name]
            elif 0 <= index < n:
                out[name] = args[index]
            elif required:
                raise TypeError(f"missing argument {name!r}")
            else:
                out[name] = default
        return out


class _MegatronState:
    """What the wrapper learns once per process (rank, claim) and reads per call."""

    def __init__(self, module, signature, version):
        self.module = module
        self.signature = signature
        self.version = version
        self.claimed = False
        self.ranks = None
        self.reader = ArgReader(signature, ["loss_dict", "iteration"] + [a for a, _ in _SCALAR_ARGS])

    def _global(self, name):
        func = self.module.__dict__.get(name)
        return func() if callable(func) else None

    def capture(self, args, kwargs):
        """Runs before the original: bind by name, decide what W&B will not get. Cheap."""
        values = self.reader.read(args, kwargs)
        megatron_args = self._global("get_args")
        if self.ranks is None:
            # Megatron initialises torch.distributed before its first iteration; ranks do not change.
            self.ranks = dist_ranks(megatron_args)
        rank, world = self.ranks
        iteration = int(values["iteration"])
        wandb_on = (bool(self._global("get_tensorboard_writer")) and bool(self._global("get_wandb_writer"))
                    and raw_wandb_active())
        if not self.claimed:
            self.claimed = True
            get_recorder().claim(
                NAME, "base", version=self.version, indicators=("hook:megatron.training.training.training_log",),
                rank=rank, world_size=world, logging_rank=world - 1, step_source="iteration",
                wandb_writer="on" if wandb_on else "off")
        if rank != world - 1:
            return None  # Megatron logs from the last rank; the others would only repeat it.
        metrics = {}
        if not wandb_on:
            loss_dict = values.get("loss_dict") or {}
            for key, value in loss_dict.items():
                metrics[str(key)] = value
        for arg, name in _SCALAR_ARGS:
            if arg not in values:
                continue
            value = values[arg]
            if value is None:
                continue
            if wandb_on and name not in _NEVER_TO_WANDB:
                flag = _WANDB_FLAG.get(name)
                if flag is None or getattr(megatron_args, flag, False):
                    continue  # W&B receives it: the raw wandb patch reports it.
            metrics[name] = value
        return (metrics, iteration, rank) if metrics else None


def _record(pending, *args, **kwargs):
    metrics, step, rank = pending
    get_recorder().record(metrics, step, source=NAME, rank=rank)


def _make_training_log(state):
    # Bind by name before Megatron runs (cheap), report after it (its own exceptions propagate).
    return patching.around("megatron.training_log", lambda *args, **kwargs: state.capture(args, kwargs), _record)


def setup(module):
    """``megatron.training.training`` was imported (the registry's gate passed)."""
    current = getattr(module, _TRAINING_LOG, None)
    if current is None:
        raise NotEnabled(f"no training_log in {module.__name__}")
    if _is_ours(current):
        return current
    version_text = megatron_version()
    signature = real_signature(current, module.__name__)
    if signature is None:
        raise NotEnabled("training_log has no loss_dict/iteration parameters")
    state = _MegatronState(module, signature, version_text)
    wrapper = patching.patch(module, _TRAINING_LOG, _make_training_log(state))
    setattr(wrapper, _MARK, True)
    get_logger().debug("Megatron hook installed (training_log%s)", signature)
    return wrapper


# ---------------------------------------------------------------- Megatron-Bridge



def _bridge_version():
    pkg = sys.modules.get("megatron.bridge")
    text = getattr(pkg, "__version__", None) if pkg is not None else None
    return text or dist_version(BRIDGE_FRAMEWORK)


def _make_bridge_callback(callbacks_module):
    base = callbacks_module.Callback

    class LensBridgeCallback(base):
        """Claims Megatron-Bridge and reports what its W&B logger does not receive."""

        def __init__(self):
            super().__init__()
            self._claimed = False
            self._ranks = None

        @patching.guard("megatron_bridge.on_train_step_end")
        def on_train_step_end(self, context):
            self._step_end(context)

        def _step_end(self, context):
            state = getattr(context, "state", None)
            cfg = getattr(state, "cfg", None)
            if self._ranks is None:
                self._ranks = dist_ranks()
            rank, world = self._ranks
            logger_cfg = getattr(cfg, "logger", None)
            wandb_on = bool(getattr(logger_cfg, "wandb_project", None)) and rank == world - 1 and raw_wandb_active()
            if not self._claimed:
                self._claimed = True
                get_recorder().claim("megatron_bridge", "base", version=_bridge_version(),
                                     indicators=("callback:megatron.bridge.training.callbacks",),
                                     rank=rank, world_size=world, logging_rank=world - 1,
                                     step_source="train_state.step", wandb_logger="on" if wandb_on else "off")
            if wandb_on or rank != world - 1:
                return
            metrics = {str(k): v for k, v in (getattr(context, "loss_dict", None) or {}).items()}
            grad_norm = getattr(context, "grad_norm", None)
            if grad_norm is not None:
                metrics["grad-norm"] = grad_norm
            if not metrics:
                return
            # The event fires before ``train_state.step`` is incremented; Bridge's own
            # training_log (and its W&B writes) use the incremented value.
            step = int(state.train_state.step) + 1
            get_recorder().record(metrics, step, source="megatron_bridge", rank=rank)

    return LensBridgeCallback


def _add_bridge_callback(callbacks_module, manager):
    if manager is None:
        manager = callbacks_module.CallbackManager()
    already = any(getattr(getattr(fn, "__self__", None), _MARK, False)
                  for fn in manager.list_callbacks("on_train_step_end"))
    if not already:
        callback = BRIDGE.state.callback_class()
        setattr(callback, _MARK, True)
        manager.add(callback)
    return manager


def _make_normalize(callbacks_module):
    def make(original):
        def normalize_callbacks(callbacks, *args, **kwargs):
            manager = original(callbacks, *args, **kwargs)
            ours = patching.call_ours("megatron_bridge.normalize_callbacks", _add_bridge_callback,
                                      callbacks_module, manager)
            return manager if ours is None else ours

        return normalize_callbacks
    return make


def setup_bridge(module):
    """``megatron.bridge.training.callbacks`` was imported (the registry's gate passed)."""
    for name in ("Callback", "CallbackManager", "normalize_callbacks"):
        if not hasattr(module, name):
            raise NotEnabled(f"the callbacks module lacks {name}")
    BRIDGE.state.callback_class = _make_bridge_callback(module)
    return patching.patch(module, "normalize_callbacks", _make_normalize(module))

