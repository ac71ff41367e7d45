"""Stand-in for Primus's Megatron backend adapter and pretrain trainer.

Primus's defaults turn Megatron's W&B and TensorBoard off; the trainer sets Megatron's
global args and runs Megatron's ``train()`` loop (``megatron.training.training``).
"""

import types


class Adapter:
    def __init__(self, name):
        self.name = name

    def setup_backend_path(self, backend_path=None):
        import megatron.training.training  # noqa: F401  (Megatron becomes importable and is imported)

    def detect_backend_version(self):
        from megatron.core import package_info

        return package_info.__version__

    def prepare_backend(self, module_config):
        import primus.backends.megatron.patches  # noqa: F401  (registers Primus's Megatron patches)

    def convert_config(self, params):
        args = types.SimpleNamespace(
            rank=0, world_size=1, pipeline_model_parallel_size=1, tensorboard_dir=None, tensorboard_log_interval=1,
            log_interval=2, wandb_project="", wandb_exp_name="", wandb_save_dir=None, save=None,
            consumed_train_samples=0, global_batch_size=4, decoupled_lr=None, log_loss_scale_to_tensorboard=False,
            log_params_norm=False, log_max_attention_logit=False, freeze_all_layers=False, train_iters=4, iteration=0,
            log_throughput=False, use_rocm_mem_info=False)
        for key, value in vars(params).items():
            setattr(args, key, value)
        return args

    def load_trainer_class(self, stage="pretrain"):
        return MegatronPretrainTrainer


class MegatronPretrainTrainer:
    def __init__(self, backend_args):
        self.args = backend_args

    def setup(self):
        import os

        from megatron.training import global_vars

        self.args.rank = int(os.environ.get("RANK", "0"))
        self.args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        global_vars.set_global_variables(self.args)

    def init(self):
        import torch

        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        from megatron.core.optimizer import FP32Optimizer

        self.optimizer = FP32Optimizer(self.model.parameters(), lr=0.05)
        self.batches = [(torch.randn(4, 4), torch.randn(4, 1)) for _ in range(self.args.train_iters)]

    def train(self):
        from megatron.training import training

        training.train(self.model, self.optimizer, self.batches)

    def cleanup(self, on_error=False):
        pass
