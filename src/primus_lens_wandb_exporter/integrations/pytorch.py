"""Plain PyTorch adapter: claims ``pytorch`` as the base when a PyTorch training
loop logs through W&B and no more specific framework claims the run.

Signals (both observed, neither guessed):

- **an optimizer step**: PyTorch's official global hook
  ``torch.optim.optimizer.register_optimizer_step_post_hook`` is registered when the
  program imports ``torch.optim.optimizer`` (``import torch`` does).  Its first call
  in a process that has a W&B run claims ``pytorch`` (the hook then returns at
  once: one attribute check per ``optimizer.step()``).
- **an initialised process group**: when a W&B run starts (``lens_run_started``, on
  the Recorder's thread) and ``torch.distributed.is_initialized()`` is true, or an
  optimizer step already happened, the claim is made there.

What "exact" means here: we *saw* PyTorch train (or its process group up) in the
process that logs to W&B, so PyTorch is certainly a base layer of this run.  These
signals cannot tell whether a more specific framework drives PyTorch (DeepSpeed,
Megatron and TorchTitan step ``torch.optim`` optimizers too); the Detector therefore
lets any specific base claim win over ``pytorch`` (``core/detection.py``), and this
adapter never claims a wrapper.  A process that never logs to W&B (rank 1 of a job
where only rank 0 logs) claims nothing and sends nothing.
"""

import sys
import threading

from ..core import patching
from ..core.hookspecs import hookimpl
from ..core.identity import dist_backend, dist_rank_world
from ..core.integration import BASE, Framework, Hint, Integration, NotEnabled, VersionRange, Watch
from ..core.log import get_logger
from ..core.recorder import get_recorder

NAME = "pytorch"
FRAMEWORK = Framework(NAME, BASE, ("torch",), (Hint("module", "torch", 0.3),))


class _State:
    """``PYTORCH.state``: the hook handle and what this process saw."""

    def __init__(self):
        self.handle = None          # RemovableHandle of our global optimizer post-hook
        self.stepped = False        # an optimizer step ran in this process
        self.claimed = False
        self.lock = threading.Lock()


PYTORCH = Integration(
    name=NAME, module=__name__, state=_State(), frameworks=(FRAMEWORK,), watches=(Watch("torch.optim.optimizer"),),
    # register_optimizer_step_post_hook exists since 2.0; tested on 2.13.  torch always has a version.
    versions=VersionRange((2, 0, 0), (2, 14, 0)), version_of=lambda module: _torch_version(), what="torch")
INTEGRATIONS = (PYTORCH,)
CONFIDENCE = 1.0           # a specific base claim still wins: the Detector prefers it over pytorch
_PG = "torch.distributed.is_initialized"




def _torch_version():
    # torch/__init__ sets __version__ before it imports torch.optim; metadata is the fallback.
    version = getattr(sys.modules.get("torch"), "__version__", None)
    if version:
        return str(version)
    from ..core.detection import dist_version

    return dist_version(FRAMEWORK)


def setup(module):
    """``torch.optim.optimizer`` was imported (the registry's gate passed)."""
    version = _torch_version()
    register = getattr(module, "register_optimizer_step_post_hook", None)
    if register is None:
        raise NotEnabled("torch.optim.optimizer has no register_optimizer_step_post_hook")
    with PYTORCH.state.lock:
        if PYTORCH.state.handle is None:
            PYTORCH.state.handle = register(_after_optimizer_step)
            on_undo = getattr(patching, "on_undo", None)  # core request R4
            if on_undo is not None:
                on_undo(remove_hook)
    get_logger().debug("PyTorch adapter installed (torch %s, global optimizer step post-hook)", version)
    return PYTORCH.state.handle


def remove_hook():
    """Unregister the optimizer hook (``uninstall()``); call from the training thread."""
    with PYTORCH.state.lock:
        handle, PYTORCH.state.handle = PYTORCH.state.handle, None
    if handle is not None:
        handle.remove()


def _after_optimizer_step(optimizer, args, kwargs):
    """Global optimizer post-hook (training thread): nothing after the claim."""
    if PYTORCH.state.claimed:
        return
    patching.call_ours("pytorch optimizer hook", _first_steps)


def _first_steps():
    PYTORCH.state.stepped = True
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        _claim("torch.optim.Optimizer.step")


def _distributed():
    """(backend, world size, rank) when the user's program initialised torch.distributed."""
    rank_world = dist_rank_world()
    backend = dist_backend() if rank_world is not None else None
    if backend is None:
        return None
    return backend, rank_world[1], rank_world[0]


def _claim(signal):
    with PYTORCH.state.lock:
        if PYTORCH.state.claimed:
            return
        PYTORCH.state.claimed = True
    extra = {"signal": signal, "distributed": False}
    dist = _distributed()
    if dist is not None:
        backend, world_size, rank = dist
        extra.update(distributed=True, backend=backend, world_size=world_size, rank=rank)
    indicators = [signal] + (["torch.distributed.is_initialized"] if dist is not None and signal != _PG else [])
    get_recorder().claim(NAME, "base", version=_torch_version(), method="exact", confidence=CONFIDENCE,
                         indicators=indicators, **extra)


@hookimpl
def lens_run_started(run):
    """A W&B run started in this process: claim if PyTorch is already seen training."""
    if PYTORCH.state.claimed or not PYTORCH.versions.allows(_torch_version()):
        return
    if _distributed() is not None:
        _claim(_PG)
    elif PYTORCH.state.stepped:
        _claim("torch.optim.Optimizer.step")
