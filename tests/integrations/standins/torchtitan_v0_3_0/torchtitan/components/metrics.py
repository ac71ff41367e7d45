"""Stand-in for ``torchtitan/components/metrics.py`` of torchtitan **0.3.0** (the PyPI
wheel ``torchtitan-0.3.0-py3-none-any.whl``).  Our own minimal re-implementation (not
TorchTitan's code).  Differences from v0.2.2 that matter to the exporter:

- ``MetricsProcessor(config, *, parallel_dims, dump_folder, pp_schedule, ft_enable,
  ft_replica_id, config_dict, tag, has_quantization)``: a ``MetricsProcessor.Config``
  replaces ``job_config.metrics``; the pipeline schedule is an ``__init__`` argument
  that the processor does not keep;
- ``_get_metrics_rank(*, parallel_dims, pp_schedule)``; ``_build_metric_logger`` is a
  method; ``WandBLogger(log_dir, config_dict=None, tag=None)``;
- ``mfu(%)`` is left out when quantization is active.

``log(step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None)`` is
unchanged and still ends in ``self.logger.log(metrics, step)``.
"""

import os
import time

import torch


def _rank():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


class BaseLogger:
    def log(self, metrics, step):
        pass

    def close(self):
        pass


class TensorBoardLogger(BaseLogger):
    def __init__(self, log_dir, tag=None):
        self.tag = tag
        self.scalars = []

    def log(self, metrics, step):
        for k, v in metrics.items():
            self.scalars.append((k if self.tag is None else f"{self.tag}/{k}", v, step))


class WandBLogger(BaseLogger):
    def __init__(self, log_dir, config_dict=None, tag=None):
        import wandb

        self.wandb = wandb
        self.tag = tag
        os.makedirs(log_dir, exist_ok=True)
        self.wandb.init(project=os.getenv("WANDB_PROJECT", "torchtitan"), name=os.getenv("WANDB_RUN_NAME", None),
                        dir=log_dir, config={"job": "standin"})

    def log(self, metrics, step):
        self.wandb.log({(k if self.tag is None else f"{self.tag}/{k}"): v for k, v in metrics.items()}, step=step)

    def close(self):
        if self.wandb.run is not None:
            self.wandb.finish()


class LoggerContainer(BaseLogger):
    def __init__(self):
        self._loggers = []

    def add_logger(self, logger_instance):
        self._loggers.append(logger_instance)

    def log(self, metrics, step):
        for logger_instance in self._loggers:
            logger_instance.log(metrics, step)

    @property
    def number_of_loggers(self):
        return len(self._loggers)

    def close(self):
        for logger_instance in self._loggers:
            logger_instance.close()


def _get_metrics_rank(*, parallel_dims, pp_schedule):
    if not parallel_dims.pp_enabled:
        return 0
    if pp_schedule == "ZBVZeroBubble":
        return 0
    return (parallel_dims.world_size // parallel_dims.pp) * (parallel_dims.pp - 1)


class MetricsProcessor:
    class Config:
        def __init__(self, log_freq=10, enable_tensorboard=False, save_tb_folder="tb",
                     save_for_all_ranks=False, enable_wandb=False):
            self.log_freq = log_freq
            self.enable_tensorboard = enable_tensorboard
            self.save_tb_folder = save_tb_folder
            self.save_for_all_ranks = save_for_all_ranks
            self.enable_wandb = enable_wandb

    def __init__(self, config, *, parallel_dims, dump_folder="./outputs", pp_schedule="1F1B", ft_enable=False,
                 ft_replica_id=0, config_dict=None, tag=None, has_quantization=False):
        self.logger = self._build_metric_logger(config=config, parallel_dims=parallel_dims, dump_folder=dump_folder,
                                                pp_schedule=pp_schedule, config_dict=config_dict, tag=tag)
        self.parallel_dims = parallel_dims
        self.config = config
        self.has_quantization = has_quantization
        self.ntokens_since_last_log = 0
        self.data_loading_times = []
        self.time_last_log = time.perf_counter()
        self.num_flops_per_token = -1
        self.gpu_peak_flops = 1e12

    def _build_metric_logger(self, *, config, parallel_dims, dump_folder, pp_schedule, config_dict=None, tag=None):
        should_log = config.enable_tensorboard or config.enable_wandb
        if (not config.save_for_all_ranks) and should_log:
            should_log = _rank() == _get_metrics_rank(parallel_dims=parallel_dims, pp_schedule=pp_schedule)
        if not should_log:
            return BaseLogger()
        base_log_dir = os.path.join(dump_folder, config.save_tb_folder)
        if config.save_for_all_ranks:
            base_log_dir = os.path.join(base_log_dir, f"rank_{_rank()}")
        container = LoggerContainer()
        if config.enable_wandb:
            container.add_logger(WandBLogger(base_log_dir, config_dict=config_dict, tag=tag))
        if config.enable_tensorboard:
            container.add_logger(TensorBoardLogger(base_log_dir, tag))
        return container

    def should_log(self, step):
        return step == 1 or step % self.config.log_freq == 0

    def log(self, step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None):
        assert self.num_flops_per_token > 0, "num_flops_per_token must be set"
        time_delta = max(time.perf_counter() - self.time_last_log, 1e-9)
        tps = self.ntokens_since_last_log / (time_delta * self.parallel_dims.non_data_parallel_size)
        mfu = None if self.has_quantization else 100 * self.num_flops_per_token * tps / self.gpu_peak_flops
        tflops = self.num_flops_per_token * tps / 1e12
        time_end_to_end = time_delta / self.config.log_freq
        loading = self.data_loading_times or [0.0]
        metrics = {
            "loss_metrics/global_avg_loss": global_avg_loss,
            "loss_metrics/global_max_loss": global_max_loss,
            "grad_norm": grad_norm,
            "throughput(tps)": tps,
            "tflops": tflops,
            "time_metrics/end_to_end(s)": time_end_to_end,
            "time_metrics/data_loading(s)": sum(loading) / len(loading),
            "time_metrics/data_loading(%)": 100 * sum(loading) / time_delta,
            "memory/max_active(GiB)": 0.0,
            "memory/max_active(%)": 0.0,
            "memory/max_reserved(GiB)": 0.0,
            "memory/max_reserved(%)": 0.0,
            "memory/num_alloc_retries": 0,
            "memory/num_ooms": 0,
        }
        if mfu is not None:
            metrics["mfu(%)"] = mfu
        if extra_metrics:
            metrics.update(extra_metrics)
        self.logger.log(metrics, step)
        print(f"step: {step:2}  loss: {global_avg_loss:8.5f}  grad_norm: {grad_norm:7.4f}", flush=True)
        self.ntokens_since_last_log = 0
        self.data_loading_times.clear()
        self.time_last_log = time.perf_counter()

    def log_validation(self, loss, step):
        self.logger.log({"validation_metrics/loss": loss}, step)

    def close(self):
        self.logger.close()
