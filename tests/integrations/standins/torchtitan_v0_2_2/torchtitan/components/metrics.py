"""Stand-in for ``torchtitan/components/metrics.py`` of pytorch/torchtitan tag **v0.2.2**
(the version Primus pins).  Our own minimal re-implementation (not TorchTitan's code):

- ``BaseLogger`` (no-op), ``TensorBoardLogger`` (an in-memory writer here: tensorboard is
  not installed), ``WandBLogger`` (``wandb.init`` then ``wandb.log(metrics, step=step)``),
  ``LoggerContainer`` fanning out to them;
- ``_get_metrics_rank(parallel_dims, job_config)``: 0, or the first rank of the last
  pipeline stage (``ZBVZeroBubble``: 0); ``_build_metric_logger`` returns a plain
  ``BaseLogger`` on every other rank unless ``save_for_all_ranks``;
- ``MetricsProcessor(job_config, parallel_dims, tag=None)`` whose
  ``log(step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None)`` builds
  the metrics dict (same keys as upstream) and calls ``self.logger.log(metrics, step)``;
  ``log_validation(loss, step)``; ``should_log(step)``.
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
    def __init__(self, log_dir, job_config, tag=None):
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


def _get_metrics_rank(parallel_dims, job_config):
    if not parallel_dims.pp_enabled:
        return 0
    if job_config.parallelism.pipeline_parallel_schedule == "ZBVZeroBubble":
        return 0
    return (parallel_dims.world_size // parallel_dims.pp) * (parallel_dims.pp - 1)


def _build_metric_logger(job_config, parallel_dims, tag=None):
    metrics_config = job_config.metrics
    should_log = metrics_config.enable_tensorboard or metrics_config.enable_wandb
    if (not metrics_config.save_for_all_ranks) and should_log:
        should_log = _rank() == _get_metrics_rank(parallel_dims, job_config)
    if not should_log:
        return BaseLogger()
    base_log_dir = os.path.join(job_config.job.dump_folder, metrics_config.save_tb_folder)
    if metrics_config.save_for_all_ranks:
        base_log_dir = os.path.join(base_log_dir, f"rank_{_rank()}")
    container = LoggerContainer()
    if metrics_config.enable_wandb:
        container.add_logger(WandBLogger(base_log_dir, job_config, tag))
    if metrics_config.enable_tensorboard:
        container.add_logger(TensorBoardLogger(base_log_dir, tag))
    return container


class MetricsProcessor:
    def __init__(self, job_config, parallel_dims, tag=None):
        self.logger = _build_metric_logger(job_config, parallel_dims, tag)
        self.parallel_dims = parallel_dims
        self.job_config = job_config
        self.ntokens_since_last_log = 0
        self.data_loading_times = []
        self.time_last_log = time.perf_counter()
        self.num_flops_per_token = -1
        self.gpu_peak_flops = 1e12

    def should_log(self, step):
        return step == 1 or step % self.job_config.metrics.log_freq == 0

    def log(self, step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None):
        assert self.num_flops_per_token > 0, "num_flops_per_token must be set"
        time_delta = max(time.perf_counter() - self.time_last_log, 1e-9)
        tps = self.ntokens_since_last_log / (time_delta * self.parallel_dims.non_data_parallel_size)
        mfu = 100 * self.num_flops_per_token * tps / self.gpu_peak_flops
        tflops = self.num_flops_per_token * tps / 1e12
        time_end_to_end = time_delta / self.job_config.metrics.log_freq
        loading = self.data_loading_times or [0.0]
        metrics = {
            "loss_metrics/global_avg_loss": global_avg_loss,
            "loss_metrics/global_max_loss": global_max_loss,
            "grad_norm": grad_norm,
            "throughput(tps)": tps,
            "tflops": tflops,
            "mfu(%)": mfu,
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


def build_metrics_processor(job_config, parallel_dims, model_args=None, tag=None):
    return MetricsProcessor(job_config, parallel_dims, tag)
