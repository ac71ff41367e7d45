"""Stand-in for ``clu/metric_writers/multi_writer.py``: fans every call out to ``self._writers``."""

from clu.metric_writers import interface


class MultiWriter(interface.MetricWriter):
    def __init__(self, writers):
        self._writers = tuple(writers)

    def write_summaries(self, step, values, metadata=None):
        for w in self._writers:
            w.write_summaries(step, values, metadata)

    def write_scalars(self, step, scalars):
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams):
        for w in self._writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self._writers:
            w.flush()

    def close(self):
        for w in self._writers:
            w.close()
