"""wandb's history rules, as pure Python: which row a value lands in, and its chart step.

Lens must hold exactly what a W&B run's history holds. Each point carries

- ``row``: W&B's history row index (``_step``), the point's identity with its name;
- ``step``: the x value the user charts the key by -- the value of the key's
  ``define_metric`` step metric in that row (including values W&B filled in itself,
  ``step_sync``), else the row. Floats are kept (an ``epoch`` of 3.5 is 3.5).

:class:`StepRules` mirrors, per run, what wandb-core (the Go process behind
``wandb.log``; wandb 0.31) does with the partial rows the client sends it:

- rows (``handlePartialHistory``): a call adds its values to the open row, a later value
  of a key in the same row replacing the earlier one. ``step=N`` above the open row
  closes that row and opens row N; ``step=N`` below it is dropped entirely (wandb prints
  "steps must be monotonically increasing" and ignores the data). The row closes after
  the call when ``commit=True``, or when neither ``step`` nor ``commit`` was given.
  ``finish`` closes the open row;
- step metrics (``core/internal/runmetric``): ``define_metric(name)`` defines one key,
  ``define_metric("prefix*")`` a glob (wandb allows ``*`` only as a suffix). A key is
  bound to a glob the first time it appears in a closed row, and stays bound (later
  globs do not rebind it); where several globs match, wandb-core picks one arbitrarily
  (Go map order) and we pick the longest prefix. Repeated definitions merge (the step
  metric is replaced when given, ``step_sync`` can only be turned on) unless
  ``overwrite=True``. ``step_sync`` defaults to True when a step metric is given;
- filled step values: wandb-core tracks the latest numeric value of every step metric
  (0 from its definition on, updated by every closed row that has it, step-only rows
  included) and, when a closed row has a key whose metric syncs its step but not the
  step metric itself, adds the step metric with that latest value to the row -- a real
  history value, so it is a point too.

WANDB_MODE=disabled has no wandb-core; the same rules run here, so a disabled run gives
Lens the same content as the offline run of the same script.

Non-wandb records (adapters reporting a framework's metrics without a W&B run, see
``Recorder.record``) have no history rows: :func:`record_row` gives them row = step when
the step is an integer >= 0 -- one point per (name, step), as they always were -- and
rows after the last one otherwise, so a fractional or negative step never collides with
nor is refused for want of a row.
"""

import math
from typing import Dict, Iterable, List, Optional, Tuple

# (name, value, chart step, row, timestamp)
RowPoint = Tuple[str, float, float, int, float]


class StepRules:
    """One run's rows and step metrics. Feed it ``define`` and ``log`` in call order.

    ``emittable(name)`` says whether a step-metric value W&B fills into a row is a point
    (the exporter's name rules); a key the caller does not emit still counts as logged.
    """

    __slots__ = ("row", "last_row", "last_values", "defined", "globs", "latest", "emittable", "_open", "_ts")

    def __init__(self, starting_row: int = 0, emittable=None):
        self.row = int(starting_row)  # the open row's index (wandb-core's partialHistoryStep)
        self.last_row: Optional[int] = None  # the last row closed
        self.last_values: Dict[str, Optional[float]] = {}  # its values (summary-only keys' steps)
        self.defined: Dict[str, list] = {}  # key -> [step metric or "", step_sync]
        self.globs: Dict[str, list] = {}  # "prefix*" -> [step metric or "", step_sync]
        self.latest: Dict[str, float] = {}  # step metric -> latest value (filled into rows)
        self.emittable = emittable or (lambda name: True)
        # The open row: name -> (number or None, timestamp, is a point)
        self._open: Dict[str, Tuple[Optional[float], float, bool]] = {}
        self._ts = 0.0

    # ------------------------------------------------------------ define_metric
    def define(self, name: str, step_metric: Optional[str] = None, step_sync: Optional[bool] = None,
               overwrite: bool = False):
        """A ``define_metric`` call (arguments as the user gave them)."""
        if not name:
            return
        if step_sync is None:
            step_sync = bool(step_metric)
        table = self.globs if name.endswith("*") else self.defined
        spec = ["", False] if overwrite or name not in table else table[name]
        if step_metric:
            spec[0] = str(step_metric)
            self.latest.setdefault(spec[0], 0.0)
        spec[1] = spec[1] or bool(step_sync)
        table[name] = spec

    def _spec(self, name: str, bind: bool):
        """``name``'s definition, binding it to the longest matching glob when ``bind``."""
        spec = self.defined.get(name)
        if spec is None and self.globs and not name.startswith("_"):
            best = max((g for g in self.globs if name.startswith(g[:-1])), key=len, default=None)
            if best is not None:
                spec = list(self.globs[best])
                if bind:
                    self.defined[name] = spec
        return spec

    def step_metric(self, name: str, bind: bool = True) -> str:
        """The step metric of ``name`` ("" when none)."""
        spec = self._spec(name, bind)
        return spec[0] if spec else ""

    def chart_step(self, name: str, values: Dict[str, Optional[float]], row: int, bind: bool = True):
        """The x value of ``name`` in a row whose values are ``values``."""
        metric = self.step_metric(name, bind) if (self.defined or self.globs) else ""
        if metric and metric != name:  # a key is never charted against itself
            value = values.get(metric)
            if value is not None and math.isfinite(value):
                return value
        return row

    # ---------------------------------------------------------------- history
    def log(self, points: Iterable[Tuple[str, float]], others: Optional[Dict[str, Optional[float]]] = None,
            step=None, commit=None, ts: float = 0.0) -> Optional[List[Tuple[int, List[RowPoint]]]]:
        """One ``Run.log`` call: its ``points`` (name, number) and the ``others`` it logged
        that are not points ({name: number, or None when not a number}).

        Returns the rows this call closed, ``[(row, [(name, value, step, row, ts)...])]``
        (usually none or one), or ``None`` when wandb drops the call (a stale ``step``).
        """
        closed = []
        if step is not None:
            if step > self.row:
                closed.extend(self._close(step))
            elif step < self.row:
                return None
        opened = self._open
        for name, value in points:
            opened[name] = (value, ts, True)  # a later value in the same row replaces it
        if others:
            for name, value in others.items():
                opened[name] = (value, ts, False)
        self._ts = ts
        if commit if commit is not None else step is None:
            closed.extend(self._close(self.row + 1))
        return closed

    def close(self) -> List[Tuple[int, List[RowPoint]]]:
        """``finish``: the open row is written."""
        return self._close(self.row + 1)

    def peek(self) -> List[Tuple[int, List[RowPoint]]]:
        """The open row as it would be closed now, leaving it open (a bounded flush)."""
        if not self._open:
            return []
        return [(self.row, self._points(dict(self._open), bind=False))]

    def _close(self, next_row) -> List[Tuple[int, List[RowPoint]]]:
        out = []
        if self._open:
            out.append((self.row, self._points(self._open, bind=True)))
            self.last_row = self.row
        self.row = int(next_row)
        self._open = {}
        return out

    def _points(self, opened, bind) -> List[RowPoint]:
        row = self.row
        latest = self.latest
        if latest:
            updates = {k: opened[k][0] for k in latest if k in opened and opened[k][0] is not None}
            if bind:
                latest.update(updates)
            else:
                latest = {**latest, **updates}
        if self.defined or self.globs:
            # Bind the row's new keys to globs, then step_sync: the latest value of a
            # missing step metric becomes part of the row (wandb-core's InsertStepMetrics).
            for name in list(opened):
                spec = self._spec(name, bind)
                if spec and spec[0] and spec[1] and spec[0] not in opened and spec[0] in latest:
                    metric = spec[0]
                    opened[metric] = (latest[metric], self._ts, self.emittable(metric))
        values = {name: v for name, (v, _, _) in opened.items()}
        if bind:
            self.last_values = values
        step_of = self.chart_step
        return [(name, value, step_of(name, values, row, bind), row, ts)
                for name, (value, ts, emit) in opened.items() if emit]


def record_row(step, last_row: Optional[int]) -> int:
    """The row of a non-wandb record at ``step`` (see the module docstring)."""
    if type(step) is int and step >= 0:
        return step
    if isinstance(step, float) and step.is_integer() and step >= 0:
        return int(step)
    return 0 if last_row is None else last_row + 1
