"""Stand-in for ``clu/metric_writers/async_writer.py``: ``AsyncWriter`` runs the wrapped
writer's calls on a one-thread pool (``self._writer``); ``AsyncMultiWriter`` is a
``MultiWriter`` of ``AsyncWriter``s; ``flush`` waits for the pool."""

import concurrent.futures
import contextlib

from clu.metric_writers import interface, multi_writer


class AsyncWriter(interface.MetricWriter):
    def __init__(self, writer, *, num_workers=1):
        self._writer = writer
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=num_workers)
        self._pending = []

    def _submit(self, fn, **kwargs):
        self._pending.append(self._pool.submit(fn, **kwargs))

    def write_summaries(self, step, values, metadata=None):
        self._submit(self._writer.write_summaries, step=step, values=values, metadata=metadata)

    def write_scalars(self, step, scalars):
        self._submit(self._writer.write_scalars, step=step, scalars=scalars)

    def write_hparams(self, hparams):
        self._submit(self._writer.write_hparams, hparams=hparams)

    def flush(self):
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        self._writer.flush()

    def close(self):
        self.flush()
        self._pool.shutdown()
        self._writer.close()


class AsyncMultiWriter(multi_writer.MultiWriter):
    def __init__(self, writers, *, num_workers=1):
        super().__init__([AsyncWriter(w, num_workers=num_workers) for w in writers])


@contextlib.contextmanager
def ensure_flushes(*writers):
    try:
        yield
    finally:
        for writer in writers:
            writer.flush()
