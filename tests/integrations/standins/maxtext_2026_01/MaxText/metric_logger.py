"""Stand-in for ``src/MaxText/metric_logger.py`` of AI-Hypercomputer/maxtext at
**b646a5354ba40b886468c73d586186714b3a450d (2026-01-23)**, the last release of the module
under this name (next commit moved it to ``MaxText/common``, then ``maxtext/common``).

Our own minimal re-implementation (not MaxText's code): ``MetricLogger(config,
learning_rate_schedule)``; ``write_metrics(metrics, step, is_training=True)`` logs on every
host, writes TensorBoard/GCS only on ``jax.process_index() == 0``; no W&B in this release;
``buffer_and_write_train_metrics(metrics, step, step_time_delta)`` writes the *previous*
step's metrics (a one-entry buffer) and ``flush_metrics_and_cleanup`` the last one.
"""

import jax


class MetricLogger:
    def __init__(self, config, learning_rate_schedule):
        self.config = config
        self.learning_rate_schedule = learning_rate_schedule
        self.buffered_train_metrics = None
        self.lines = []

    def write_metrics(self, metrics, step, is_training=True):
        if metrics:
            self.log_metrics(metrics, step, is_training)
            if self.config.enable_tensorboard and jax.process_index() == 0:
                self.write_metrics_to_tensorboard(metrics, step, is_training)

    def log_metrics(self, metrics, step, is_training):
        loss = metrics["scalar"]["learning/loss"]
        print(f"completed step: {step}, loss: {float(loss):.3f}", flush=True)

    def write_metrics_to_tensorboard(self, metrics, step, is_training):
        self.lines.extend((name, step) for name in metrics.get("scalar", {}))

    def record_train_metrics(self, metrics, step, step_time):
        metrics["scalar"].update({"perf/step_time_seconds": step_time})
        metrics["scalar"].update({"learning/current_learning_rate": self.learning_rate_schedule(step)})

    def buffer_and_write_train_metrics(self, metrics, step, step_time_delta):
        if self.buffered_train_metrics is not None:
            (step_to_write, metrics_to_write) = self.buffered_train_metrics
            self.write_metrics(metrics_to_write, step_to_write)
        self.record_train_metrics(metrics, step, step_time_delta.total_seconds())
        self.buffered_train_metrics = (step, metrics)

    def flush_metrics_and_cleanup(self):
        if self.buffered_train_metrics is not None:
            (step_to_write, metrics_to_write) = self.buffered_train_metrics
            self.write_metrics(metrics_to_write, step_to_write)
