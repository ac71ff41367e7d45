"""Stand-in for google/CommonLoopUtils (``clu``) at v0.0.12-21-g04ad2f9 (2026-07-07).

Only ``clu.metric_writers`` is reproduced (our own minimal code, not CLU's): the
``MetricWriter`` ABC, ``LoggingWriter``, ``MultiWriter``, ``AsyncWriter`` (inner writes on
a thread pool), ``AsyncMultiWriter`` and ``create_default_writer``.  ``SummaryWriter``
needs TensorFlow and is left out (``create_default_writer`` without ``logdir``).
"""
