"""Stand-in for ``clu/metric_writers/interface.py``: ``MetricWriter`` is an ABC whose
``write_scalars(step, scalars)`` and friends are abstract."""

import abc


class MetricWriter(abc.ABC):
    @abc.abstractmethod
    def write_summaries(self, step, values, metadata=None):
        """Saves summaries."""

    @abc.abstractmethod
    def write_scalars(self, step, scalars):
        """Write scalar values for the step."""

    @abc.abstractmethod
    def write_hparams(self, hparams):
        """Write hyper parameters."""

    @abc.abstractmethod
    def flush(self):
        """Tells the MetricWriter to write out any cached values."""

    @abc.abstractmethod
    def close(self):
        """Flushes and closes the MetricWriter."""
