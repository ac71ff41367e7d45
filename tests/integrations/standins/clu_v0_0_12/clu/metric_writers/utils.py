"""Stand-in for ``clu/metric_writers/utils.py``: ``create_default_writer(logdir=None, *,
just_logging=False, asynchronous=True, collection=None)`` and ``write_values``."""

from clu.metric_writers.async_writer import AsyncMultiWriter
from clu.metric_writers.logging_writer import LoggingWriter
from clu.metric_writers.multi_writer import MultiWriter


def create_default_writer(logdir=None, *, just_logging=False, asynchronous=True, collection=None):
    writers = [LoggingWriter(collection=collection)]
    if asynchronous:
        return AsyncMultiWriter(writers)
    return MultiWriter(writers)


def write_values(writer, step, metrics):
    writer.write_scalars(step, {k: v for k, v in metrics.items()})
