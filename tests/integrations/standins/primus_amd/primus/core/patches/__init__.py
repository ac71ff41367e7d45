"""Stand-in for ``primus.core.patches``: ``register_patch(patch_id, backend=None, phase=...)``
and ``run_patches(backend, phase, ...)`` running the registered patches in order."""

_PATCHES = []


class PatchContext:
    def __init__(self, backend, phase, backend_version, extra):
        self.backend = backend
        self.phase = phase
        self.backend_version = backend_version
        self.extra = extra


def register_patch(patch_id, backend=None, phase="before_train"):
    def decorate(func):
        _PATCHES.append((patch_id, backend, phase, func))
        return func
    return decorate


def run_patches(backend, phase, backend_version=None, model_name=None, module_name=None, extra=None):
    ctx = PatchContext(backend, phase, backend_version, extra or {})
    for _patch_id, patch_backend, patch_phase, func in list(_PATCHES):
        if patch_phase == phase and patch_backend in (None, backend):
            func(ctx)


def get_args(ctx):
    return ctx.extra.get("backend_args")
