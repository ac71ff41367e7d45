"""Batching: pending points per (data source, run, rank), emitted as MetricBatch by size and time."""

import time
from bisect import bisect_right
from itertools import accumulate
from operator import attrgetter

from .. import normalize
from ..identity import Ranks, resolve_ranks
from ..log import get_logger
from ..steps import record_row
from ...sinks import call_sinks
from ... import limits
from .batch import MetricBatch, Point, Row
from .runs import SUMMARY_INTERVAL
from .schedule import next_send, send_phase

# A fast-path row is its points' step and row: Lens takes it when it is within both limits.
_TOP_ROW = min(limits.MAX_ROW, int(limits.MAX_ABS_STEP))
_steps = attrgetter("step")
_values = attrgetter("values")


class Batcher:
    """Points waiting for their batch (mixin of Recorder; worker thread only)."""

    def _on_record(self, state, data, step, ts, source, rank):
        """Metrics an adapter reported itself: no W&B row; row = step (core/steps.py)."""
        if step is None:
            step = state.rules.row if state is not None else 0
        elif type(step) is not int:
            number = normalize.to_float(step)
            step = 0 if number is None or number != number or abs(number) == float("inf") else number
        points, _ = self._flatten(data)
        if not points:
            return
        run_id = state.run_id if state else ""
        rank = self._current_ranks().rank if rank is None else rank
        key = (source, run_id, rank)
        row = record_row(step, self._record_rows.get(key))
        if row > self._record_rows.get(key, -1):
            self._record_rows[key] = row
        self._add_points([(name, value, step, row, ts) for name, value in points], source, run_id, rank)

    def _flatten(self, data):
        """Points of ``data``, and its other keys ({name: number or None}); filtered counted."""
        points, filtered = normalize.flatten(data)
        others = {}
        if filtered:
            self.counters.filtered += len(filtered)
            for name, reason in filtered:
                # Reserved and internal names are not points but their values still count
                # for wandb's rules (``define_metric("loss", step_metric="step")``).
                others[name] = normalize.to_float(data[name]) if name in data else None
                if (name, reason) not in self._filtered_names and len(self._filtered_names) < 10000:
                    self._filtered_names.add((name, reason))
                    get_logger().debug("filtered %r: %s", name, reason)
        return points, others

    def _add_points(self, row_points, source, run_id, rank=None):
        """Queue ``(name, value, step, row, timestamp)`` points for the sinks."""
        if not row_points:
            return
        rank = self._current_ranks().rank if rank is None else rank
        wire = normalize.wire_value
        # value - value == 0 is False only for NaN/±Inf, which travel as strings.  The wire's
        # default for a missing row is the (integer) step: most points are charted by their
        # row, and leaving it out keeps request bodies ~15 % smaller (docs/protocol.md).
        points = [Point(name, value if value - value == 0 else wire(value), step,
                        None if row == step and type(step) is int else row, ts)
                  for name, value, step, row, ts in row_points]
        self._queue_points((source, run_id, rank), points, len(points))

    def _add_row(self, key, data, row, ts):
        """A fast-path row (``Worker._drain``): ``data`` {name: finite float}, each point charted by ``row``."""
        self._queue_points(key, Row(data, row, None, ts), len(data))

    def _queue_rows(self, key, rows, count):
        """Fast-path rows of one key at once (``Worker._drain_plain``): ``count`` points in all.

        A batch is emitted before the row that would take it past ``batch_size`` (one by one,
        ``_queue_points`` emits after it): each batch has at most ``batch_size`` points unless
        one row alone has more, so the sink sends it as one request."""
        while rows:
            room = self.config.batch_size - self._pending_count
            cut, part = len(rows), count
            if count > room:
                sizes = list(accumulate(map(len, map(_values, rows))))
                cut = max(1, bisect_right(sizes, room))
                part = sizes[cut - 1]
            bucket = self._pending.get(key)
            if bucket is None:
                bucket = self._pending[key] = [0]
            bucket.extend(rows if cut == len(rows) else rows[:cut])
            bucket[0] += part
            self._counted(part)
            if cut == len(rows):
                return
            if self._pending:  # a row that does not fit (_counted emitted what reached batch_size)
                self._emit_all()
            rows, count = rows[cut:], count - part

    def _queue_points(self, key, entry, count):
        # Entries keep their order: a list of Points (slow path) or one Row (fast path).
        bucket = self._pending.get(key)
        if bucket is None:
            bucket = self._pending[key] = [0]  # [point count, entries...]
        bucket.append(entry)
        bucket[0] += count
        self._counted(count)

    def _counted(self, count):
        self.counters.points += count
        self._pending_count += count
        if self._pending_since is None:
            self._pending_since = time.monotonic()
            self._send_at = self._next_send()
        if self._pending_count >= self.config.batch_size:
            self._emit_all()

    def _current_ranks(self) -> Ranks:
        now = time.monotonic()
        if now - self._ranks_checked > 5.0:
            self._ranks_checked = now
            self._ranks = resolve_ranks()
        return self._ranks

    def _next_send(self) -> float:
        """When the points pending from now leave: this rank's next slot (schedule.py)."""
        interval = self.config.flush_interval
        phase = send_phase(self.identity.workload_uid, self._current_ranks().rank)
        return next_send(time.time(), interval, phase)

    def _maybe_emit(self):
        if time.monotonic() - self._stats_written > 30.0:
            self._write_stats()
        if time.monotonic() - self._summary_reported > SUMMARY_INTERVAL:
            self._report_summaries()
        if self._pending_since is not None and (
                time.time() >= self._send_at
                # A wall clock set back must not hold points longer than one interval.
                or time.monotonic() - self._pending_since >= self.config.flush_interval):
            self._emit_all()

    def _emit_all(self):
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._pending_count = 0
        self._pending_since = None
        ranks = self._current_ranks()
        for (source, run_id, rank), entries in pending.items():
            count = entries[0]
            del entries[0]
            batch = MetricBatch(source=source, run_id=run_id, rank=rank, local_rank=ranks.local_rank,
                                node_rank=ranks.node_rank, world_size=ranks.world_size, identity=self.identity,
                                exporter=self.counters.exporter(), entries=entries, count=count,
                                checked=_checked(entries))
            self.counters.batches += 1
            call_sinks(self._sinks or (), "report_metrics", batch)
            self._call("lens_report_metrics", batch=batch)
        get_logger().debug("✓ Metrics data queued for reporting (%d batches)", len(pending))


def _checked(entries):
    """Whether every entry is a fast-path row within Lens's limits (the sinks need not check them)."""
    if not all(type(e) is Row for e in entries):
        return False
    rows = list(map(_steps, entries))  # a fast-path row's step is its row
    return min(rows) >= 0 and max(rows) <= _TOP_ROW
