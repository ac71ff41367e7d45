"""Import-only stubs that let the REAL Megatron-Bridge 0.3.1 be imported on a CPU machine.

Why this exists: ``megatron/bridge/__init__.py:16`` imports ``AutoBridge`` eagerly, which reaches
``peft/lora_layers.py:20 import transformer_engine.pytorch as te``; ``models/mamba`` reaches
``megatron/core/ssm/mamba_mixer.py:22`` -> ``.../attention_context/triton/tensor_ops.py:6 import
triton``; ``training/checkpointing.py:53`` imports ``modelopt``.  Transformer Engine, Triton and
ModelOpt only install with CUDA, so without stand-ins nothing of ``megatron.bridge`` (the
callbacks module we hook included) can be imported here.

What it is: a meta-path finder that answers for those top-level packages only, with modules
whose every attribute is an inert dummy (a class for a capitalised name, a sub-module
otherwise).  The tests never *run* any of it: the code under test -- ``callbacks``, ``state``,
``pretrain``, ``train_state`` -- is Bridge's own.

Order matters: ``megatron.core`` decides ``HAVE_TE`` at import (try/except ImportError), so the
real TE-less ``megatron.core`` modules must be imported BEFORE :func:`install`; otherwise core
believes TE exists and fails (``extensions/transformer_engine.py``: ``_SplitAlongDim.apply``).
"""

import importlib.abc
import importlib.machinery
import sys
import types

#: GPU-only packages Megatron-Bridge 0.3.1 imports eagerly.
GPU_ONLY = ("transformer_engine", "triton", "modelopt")


class _Dummy:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Dummy()

    def __getattr__(self, name):
        return _Dummy()

    def __mro_entries__(self, bases):
        return (object,)

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())


class _StubModule(types.ModuleType):
    __path__ = []  # a package: its sub-modules import too

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[:1].islower():  # a sub-module or a function
            value = _StubModule(f"{self.__name__}.{name}")
            sys.modules.setdefault(value.__name__, value)
        else:  # a class, possibly subclassed by Bridge code
            value = type(name, (object,), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, value)
        return value

    def __call__(self, *args, **kwargs):
        return _Dummy()


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = frozenset(roots)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__version__ = "0.0.0+cpu-stub"
        return module

    def exec_module(self, module):
        pass


def install(roots=GPU_ONLY):
    """Answer imports of ``roots`` with stubs (call after importing the real megatron.core)."""
    sys.meta_path.insert(0, _Finder(roots))
