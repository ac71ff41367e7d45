"""Stand-in for ``clu/metric_writers/__init__.py``: the same public names."""

from clu.metric_writers.async_writer import AsyncMultiWriter, AsyncWriter, ensure_flushes  # noqa: F401
from clu.metric_writers.interface import MetricWriter  # noqa: F401
from clu.metric_writers.logging_writer import LoggingWriter  # noqa: F401
from clu.metric_writers.multi_writer import MultiWriter  # noqa: F401
from clu.metric_writers.utils import create_default_writer, write_values  # noqa: F401
