"""Stand-in for ``clu/metric_writers/logging_writer.py``: writes one log line per call."""

import logging

from clu.metric_writers import interface


class LoggingWriter(interface.MetricWriter):
    def __init__(self, collection=None):
        self._collection_str = f" collection={collection}" if collection else ""

    def write_summaries(self, step, values, metadata=None):
        logging.info("[%d]%s %s", step, self._collection_str, values)

    def write_scalars(self, step, scalars):
        values = [f"{k}={v:.6g}" for k, v in sorted(scalars.items())]
        print(f"[{step}]{self._collection_str} {', '.join(values)}", flush=True)

    def write_hparams(self, hparams):
        logging.info("[Hyperparameters]%s %s", self._collection_str, hparams)

    def flush(self):
        logging.flush() if hasattr(logging, "flush") else None

    def close(self):
        self.flush()
