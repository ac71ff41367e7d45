"""Stand-in for ``src/maxtext/common/metric_logger.py`` of AI-Hypercomputer/maxtext main
**e591f30cbbf217ed67ef71263ec0538239f9c3b8 (2026-11)**.

Our own minimal re-implementation (not MaxText's code): ``write_metrics(metrics, step,
metric_type="train")`` (``"train"``, ``"eval"``, ``"running_eval"``) logs on every host
and, when ``config.enable_wandb`` and ``jax.process_index() == 0``, calls
``write_metrics_to_wandb`` = ``wandb.log(flat, step=step)`` with ``metrics["scalar"]`` as
floats; ``MetricLogger.__init__`` calls ``wandb.init`` under the same condition.  The train
loop goes through ``buffer_and_write_metrics`` (one-entry buffer: the previous step is
written when the next one arrives) and ``flush_metrics_and_cleanup``.
"""

import jax


class MetricLogger:
    def __init__(self, config, learning_rate_schedule):
        self.config = config
        self.learning_rate_schedule = learning_rate_schedule
        self.buffered_metrics = []
        if self.config.enable_wandb and jax.process_index() == 0:
            import wandb

            wandb.init(project=config.wandb_project_name, name=config.wandb_run_name, dir=config.base_output_directory)

    def write_metrics(self, metrics, step, metric_type="train"):
        if metrics:
            self.log_metrics(metrics, step, metric_type)
            if self.config.enable_wandb and jax.process_index() == 0:
                self.write_metrics_to_wandb(metrics, step)

    def log_metrics(self, metrics, step, metric_type):
        if metric_type == "train":
            print(f"completed step: {step}, loss: {float(metrics['scalar']['learning/loss']):.3f}", flush=True)

    def write_metrics_to_wandb(self, metrics, step):
        import wandb

        flat_metrics = {key: float(val) for key, val in metrics.get("scalar", {}).items()}
        for key, val in metrics.get("scalars", {}).items():
            for subkey, subval in val.items():
                flat_metrics[f"{key}/{subkey}"] = float(subval)
        wandb.log(flat_metrics, step=step)

    def record_train_metrics(self, metrics, step, step_time):
        metrics["scalar"].update({"perf/step_time_seconds": step_time})
        metrics["scalar"].update({"learning/current_learning_rate": self.learning_rate_schedule(step)})

    def buffer_and_write_metrics(self, metrics, step, step_time_delta=None, is_training=True):
        if self.buffered_metrics:
            _, prev_step, prev_metrics, _ = self.buffered_metrics.pop(0)
            self.write_metrics(prev_metrics, prev_step)
        self.record_train_metrics(metrics, step, step_time_delta.total_seconds())
        self.buffered_metrics.append(("train", step, metrics, step_time_delta))

    def flush_metrics_and_cleanup(self):
        for _, step, metrics, _ in self.buffered_metrics:
            self.write_metrics(metrics, step)
        self.buffered_metrics = []
        if self.config.enable_wandb and jax.process_index() == 0:
            import wandb

            wandb.finish()
