"""Stand-in for ``primus/core/runtime/train_runtime.py`` of AMD-AGI/Primus v26.5.1.

Same class and method names and call order as upstream; configuration loading is
reduced to ``args.framework`` / ``args.params`` (upstream reads them from the YAML
module config).
"""

from dataclasses import dataclass
from typing import Any, Optional

from primus.core.backend.backend_registry import BackendRegistry
from primus.core.patches import run_patches


@dataclass
class TrainContext:
    module_name: str
    module_config: Any
    framework: str
    adapter: Any = None
    trainer: Any = None
    backend_args: Any = None
    backend_version: Optional[str] = None


class PrimusRuntime:
    def __init__(self, args):
        self.args = args
        self.ctx = None

    def run_train_module(self, module_name, overrides=None):
        try:
            self._initialize_configuration(module_name, overrides or [])
            self._initialize_runtime_environment()
            self._initialize_backend_and_execute()
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            raise RuntimeError(f"Training execution failed: {e}") from e

    def _initialize_configuration(self, module_name, overrides):
        framework = self.args.framework
        if not framework:
            raise ValueError(f"[Primus:TrainRuntime] Module '{module_name}' missing 'framework'.")
        self.ctx = TrainContext(module_name=module_name, module_config=self.args, framework=framework)

    def _initialize_runtime_environment(self):
        self._initialize_distributed_context()

    def _initialize_distributed_context(self):
        from primus.core.utils.env import get_torchrun_env

        dist_env = get_torchrun_env()
        self.ctx.rank = dist_env["rank"]
        self.ctx.world_size = dist_env["world_size"]
        self.ctx.local_rank = dist_env["local_rank"]

    def _initialize_backend_and_execute(self):
        self._initialize_adapter()
        self._initialize_trainer()
        self._run_trainer_lifecycle()

    def _get_backend_version(self):
        if self.ctx.backend_version is not None:
            return self.ctx.backend_version
        if self.ctx.adapter is None:
            return None
        try:
            self.ctx.backend_version = self.ctx.adapter.detect_backend_version()
        except Exception:
            self.ctx.backend_version = None
        return self.ctx.backend_version

    def _run_phase_patches(self, phase, backend_args=None):
        run_patches(backend=self.ctx.framework, phase=phase, backend_version=self._get_backend_version(),
                    module_name=self.ctx.module_name,
                    extra={"backend_args": backend_args, "module_config": self.ctx.module_config})

    def _initialize_adapter(self):
        backend_path = getattr(self.args, "backend_path", None)
        adapter = BackendRegistry.get_adapter(backend=self.ctx.framework, backend_path=backend_path)
        assert adapter is not None
        adapter.setup_backend_path(backend_path=backend_path)
        self.ctx.adapter = adapter

    def _initialize_trainer(self):
        adapter = self.ctx.adapter
        adapter.prepare_backend(self.ctx.module_config)
        backend_args = adapter.convert_config(self.ctx.module_config.params)
        self.ctx.backend_args = backend_args
        self._run_phase_patches(phase="build_args", backend_args=backend_args)
        trainer_class = adapter.load_trainer_class(stage="pretrain")
        self.ctx.trainer = trainer_class(backend_args=backend_args)

    def _run_trainer_lifecycle(self):
        trainer = self.ctx.trainer
        self._run_phase_patches(phase="setup", backend_args=self.ctx.backend_args)
        trainer.setup()
        trainer.init()
        self._run_phase_patches(phase="before_train", backend_args=self.ctx.backend_args)
        trainer.train()
        self._run_phase_patches(phase="after_train", backend_args=self.ctx.backend_args)
        trainer.cleanup()
