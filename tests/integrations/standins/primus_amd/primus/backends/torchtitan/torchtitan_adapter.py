"""Stand-in for Primus's TorchTitan backend: sets ``WANDB_PROJECT`` / ``WANDB_RUN_NAME``
only, and runs TorchTitan's metrics path (v0.2.2, the version Primus pins)."""

import types


class Adapter:
    def __init__(self, name):
        self.name = name

    def setup_backend_path(self, backend_path=None):
        import torchtitan  # noqa: F401

    def detect_backend_version(self):
        return "0.2.2"

    def prepare_backend(self, module_config):
        pass

    def convert_config(self, params):
        return params

    def load_trainer_class(self, stage="pretrain"):
        return TorchTitanPretrainTrainer


class TorchTitanPretrainTrainer:
    def __init__(self, backend_args):
        self.args = backend_args

    def setup(self):
        pass

    def init(self):
        from torchtitan.components.metrics import build_metrics_processor

        job_config = types.SimpleNamespace(
            metrics=types.SimpleNamespace(log_freq=1, enable_tensorboard=False, enable_wandb=False,
                                          save_tb_folder="tb", save_for_all_ranks=False),
            parallelism=types.SimpleNamespace(pipeline_parallel_schedule="1F1B"),
            job=types.SimpleNamespace(dump_folder="."))
        dims = types.SimpleNamespace(pp_enabled=False, pp=1, world_size=1, non_data_parallel_size=1)
        self.processor = build_metrics_processor(job_config, dims)
        self.processor.num_flops_per_token = 100

    def train(self):
        import torch

        model = torch.nn.Linear(4, 1)
        for step in range(1, 4):
            loss = torch.nn.functional.mse_loss(model(torch.randn(2, 4)), torch.randn(2, 1))
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            self.processor.ntokens_since_last_log += 8
            self.processor.log(step, loss.item(), loss.item(), grad_norm.item(), extra_metrics={"lr": 0.01})

    def cleanup(self, on_error=False):
        pass
