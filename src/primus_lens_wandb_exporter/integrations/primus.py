"""AMD Primus adapter: the runtime names the backend it is about to train with.

``primus.core.runtime.train_runtime.PrimusRuntime._initialize_adapter`` resolves the
backend adapter for ``ctx.framework`` (``megatron``, ``megatron_bridge``, ``torchtitan``,
``maxtext`` ...).  When it returns, the context holds the backend name and the rank and
world size (set just before, by ``_initialize_distributed_context``); we claim the
``primus`` wrapper and that base exactly.  The backend version is known a little later,
when the runtime's ``_get_backend_version`` first answers: we claim the base again
with it.  Metrics come from the backend's own adapter (Megatron's ``training_log``,
TorchTitan's ``MetricsProcessor.log`` ...), never from here.

PyPI's unrelated ``primus`` package has no ``primus.core.runtime``: this module is only
ever imported by the import watcher for AMD's Primus.
"""

import sys

from ..core import patching
from ..core.integration import WRAPPER, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder

NAME = "primus"


def _is_amd_primus(modules) -> bool:
    # PyPI's unrelated "primus" has none of AMD Primus's sub-packages.
    return any(m.startswith(("primus.core", "primus.backends", "primus.modules")) for m in modules)


class _Claims:
    """``PRIMUS.state``: the last wrapper/base claim (claimed again only when it changes)."""

    def __init__(self):
        self.base = None
        self.base_version = None
        self.extra = {}

    def claim(self, ctx, version=None):
        framework = str(getattr(ctx, "framework", "") or "").strip().lower()
        if not framework:
            return
        base = BACKENDS.get(framework, framework)
        if base == self.base and version == self.base_version:
            return
        self.base, self.base_version = base, version
        rank = getattr(ctx, "rank", None)
        world = getattr(ctx, "world_size", None)
        extra = {"backend": framework}
        if isinstance(rank, int):
            extra["rank"] = rank
        if isinstance(world, int):
            extra["world_size"] = world
        module_name = getattr(ctx, "module_name", None)
        if isinstance(module_name, str):
            extra["module"] = module_name
        indicator = "hook:primus.core.runtime.train_runtime.PrimusRuntime._initialize_adapter"
        recorder = get_recorder()
        recorder.claim(NAME, "wrapper", version=primus_version(), indicators=(indicator,), **extra)
        # The backend's own adapter (Megatron's training_log, TorchTitan's MetricsProcessor)
        # claims the same base again once training runs; the latest claim wins.
        recorder.claim(base, "base", version=version,
                       indicators=(indicator, f"primus.ctx.framework={framework}"), **extra)


PRIMUS = Integration(
    name=NAME, module=__name__, state=_Claims(),
    frameworks=(Framework(NAME, WRAPPER, ("primus",), (
        Hint("module", "primus.core.runtime", 0.8, when=_is_amd_primus),
        Hint("module", "primus.backends", 0.8, when=_is_amd_primus),
        Hint("env", "PRIMUS_PATH", 0.4),
        Hint("env", "PRIMUS_CONFIG", 0.4),
    )),),
    watches=(Watch("primus.core.runtime.train_runtime"),),
    # Releases whose runtime we reproduced: v26.2 .. v26.12 (compared on two parts), v26.5.1 and
    # main of 2026-11 tested.  A source checkout has no version: the structural check decides.
    versions=VersionRange((26, 2), (26, 13), unknown="allow"), version_of=lambda module: primus_version())
INTEGRATIONS = (PRIMUS,)

# Primus backend name -> our base framework name (a Framework declared by an integration).
BACKENDS = {
    "megatron": "megatron",
    "megatron_bridge": "megatron_bridge",
    "torchtitan": "torchtitan",
    "maxtext": "maxtext",
    "maxdiffusion": "jax",
    "jax": "jax",
}


def primus_version():
    pkg = sys.modules.get("primus")
    return getattr(pkg, "__version__", None) if pkg is not None else None




def _after_initialize_adapter(runtime, *args, **kwargs):
    ctx = getattr(runtime, "ctx", None)
    if ctx is not None:
        PRIMUS.state.claim(ctx, getattr(ctx, "backend_version", None))


def _after_get_backend_version(version, runtime, *args, **kwargs):
    ctx = getattr(runtime, "ctx", None)
    if ctx is not None and version is not None:
        PRIMUS.state.claim(ctx, str(version))


# Primus's own errors propagate untouched; ours are counted (core/patching.py).
_make_initialize_adapter = patching.then("primus._initialize_adapter", _after_initialize_adapter)
_make_get_backend_version = patching.then("primus._get_backend_version", _after_get_backend_version, result=True)


def setup(module):
    """``primus.core.runtime.train_runtime`` was imported (AMD Primus only; the gate passed)."""
    runtime = getattr(module, "PrimusRuntime", None)
    if runtime is None or not hasattr(runtime, "_initialize_adapter"):
        raise NotEnabled("no PrimusRuntime._initialize_adapter")
    wrapper = patching.patch(runtime, "_initialize_adapter", _make_initialize_adapter)
    if hasattr(runtime, "_get_backend_version"):
        patching.patch(runtime, "_get_backend_version", _make_get_backend_version)
    get_logger().debug("Primus hook installed (PrimusRuntime._initialize_adapter)")
    return wrapper

