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
    Runs in the exporter's worker thread, once per ``wandb.log``: the common call (a
    plain ``log(dict)`` without rules) takes a short path.
    """

    __slots__ = ("row", "last_row", "last_values", "defined", "globs", "latest", "emittable",
                 "_unmatched", "_open", "_others", "_times", "_ts")

    def __init__(self, starting_row: int = 0, emittable=None):
        self.row = int(starting_row)  # the open row's index (wandb-core's partialHistoryStep)
        self.last_row: Optional[int] = None  # the last row closed
        self.last_values: Dict[str, float] = {}  # its points' values (summary-only keys' steps)
        self.defined: Dict[str, list] = {}  # key -> [step metric or "", step_sync]
        self.globs: Dict[str, list] = {}  # "prefix*" -> [step metric or "", step_sync]
        self.latest: Dict[str, float] = {}  # step metric -> latest value (filled into rows)
        self.emittable = emittable or (lambda name: True)
        self._unmatched = set()  # keys no glob matches (until the next glob is defined)
        # The open row: its points {name: number}, its other keys {name: number or None},
        # and the time each point was logged when the row spans several calls.
        self._open: Dict[str, float] = {}
        self._others: Dict[str, Optional[float]] = {}
        self._times: Dict[str, float] = {}
        self._ts = 0.0

    # ------------------------------------------------------------ define_metric
    def define(self, name: str, step_metric: Optional[str] = None, step_sync: Optional[bool] = None,
               overwrite: bool = False):
        """A ``define_metric`` call (arguments as the user gave them)."""
        if not name:
            return
        if step_sync is None:
            step_sync = bool(step_metric)
        is_glob = name.endswith("*")
        table = self.globs if is_glob else self.defined
        spec = ["", False] if overwrite or name not in table else table[name]
        if step_metric:
            spec[0] = str(step_metric)
            self.latest.setdefault(spec[0], 0.0)
        spec[1] = spec[1] or bool(step_sync)
        table[name] = spec
        if is_glob:
            self._unmatched.clear()

    def _spec(self, name: str, bind: bool = True):
        """``name``'s definition, binding it to the longest matching glob when ``bind``."""
        spec = self.defined.get(name)
        if spec is None and self.globs and name not in self._unmatched and not name.startswith("_"):
            best = max((g for g in self.globs if name.startswith(g[:-1])), key=len, default=None)
            if best is None:
                if bind:
                    self._unmatched.add(name)
            else:
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
        if metric:  # covered by its own glob: charted by its own value, as W&B does
            value = values.get(metric)
            if value is not None and math.isfinite(value):
                return value
        return row

    # ---------------------------------------------------------------- history
    def log(self, points: List[Tuple[str, float]], others: Optional[Dict[str, Optional[float]]] = None,
            step=None, commit=None, ts: float = 0.0) -> Optional[List[Tuple[int, List[RowPoint]]]]:
        """One ``Run.log`` call: its ``points`` (name, number) and the ``others`` it logged
        that are not points ({name: number, or None when not a number}).

        Returns the rows this call closed, ``[(row, [(name, value, step, row, ts)...])]``
        (usually none or one), or ``None`` when wandb drops the call (a stale ``step``).
        """
        if step is None and commit is None and not self._open and not self._others:
            # The common call: one call, one row.
            self._ts = ts
            return self._close_with(dict(points), dict(others) if others else {}, {}, ts)
        closed = []
        if step is not None:
            if step > self.row:
                closed.extend(self._close(step))
            elif step < self.row:
                return None
        if self._open or self._others:
            # The row spans calls: remember when each earlier value was logged.
            times = self._times
            for name in self._open:
                if name not in times:
                    times[name] = self._ts
        opened = self._open
        for name, value in points:
            opened[name] = value  # a later value of a key in the same row replaces it
            self._others.pop(name, None)
            self._times.pop(name, None)
        if others:
            for name, value in others.items():
                opened.pop(name, None)
                self._others[name] = value
        self._ts = ts
        if commit if commit is not None else step is None:
            closed.extend(self._close(self.row + 1))
        return closed

    def next_row(self, values: Dict[str, float], ts: float = 0.0) -> Optional[int]:
        """The plain call's fast path: ``log(points)`` with no step, no commit, no rules, nothing open.

        Numbers the row as ``log`` would (its points are ``values``, each charted by the
        row) and returns it; ``None`` (nothing changed) when the rules are not that plain.
        """
        if self.defined or self.globs or self._open or self._others:
            return None
        row = self.row
        self.row = row + 1
        self.last_row = row
        self.last_values = values
        self._ts = ts
        return row

    def next_rows(self, count: int, last: Dict[str, float], ts: float = 0.0) -> Optional[int]:
        """``next_row`` for ``count`` plain calls at once (``last``: the last one's values): the
        first row, the others following it; ``None`` (nothing changed) when the rules are not plain."""
        if self.defined or self.globs or self._open or self._others:
            return None
        row = self.row
        self.row = row + count
        self.last_row = row + count - 1
        self.last_values = last
        self._ts = ts
        return row

    def close(self) -> List[Tuple[int, List[RowPoint]]]:
        """``finish``: the open row is written."""
        return self._close(self.row + 1)

    def peek(self) -> List[Tuple[int, List[RowPoint]]]:
        """The open row as it would be closed now, leaving it (and every rule) as it is."""
        if not self._open and not self._others:
            return []
        twin = StepRules(self.row, self.emittable)
        twin.defined = {k: list(v) for k, v in self.defined.items()}
        twin.globs = {k: list(v) for k, v in self.globs.items()}
        twin.latest = dict(self.latest)
        twin._open, twin._others, twin._times, twin._ts = (dict(self._open), dict(self._others),
                                                           dict(self._times), self._ts)
        return twin.close()

    def _close(self, next_row) -> List[Tuple[int, List[RowPoint]]]:
        if not self._open and not self._others:
            self.row = int(next_row)
            return []
        opened, others, times = self._open, self._others, self._times
        self._open, self._others, self._times = {}, {}, {}
        out = self._close_with(opened, others, times, self._ts)
        self.row = int(next_row)
        return out

    def _close_with(self, values, others, times, ts) -> List[Tuple[int, List[RowPoint]]]:
        """Close the open row holding ``values`` (points) and ``others``; the row advances by one."""
        row = self.row
        self.row = row + 1
        self.last_row = row
        self.last_values = values
        if not (self.defined or self.globs):
            if times:
                return [(row, [(n, v, row, row, times.get(n, ts)) for n, v in values.items()])]
            return [(row, [(n, v, row, row, ts) for n, v in values.items()])]
        latest = self.latest
        for metric in latest:  # wandb-core's UpdateMetrics: latest numeric value of each step metric
            value = values.get(metric)
            if value is None:
                value = others.get(metric)
            if value is not None:
                latest[metric] = value
        # Bind the row's keys to globs, then step_sync: the latest value of a missing step
        # metric becomes part of the row (wandb-core's InsertStepMetrics).
        spec_of = self._spec
        specs = {}
        for source in (values, others):
            for name in list(source):
                spec = spec_of(name)
                if spec is not None:
                    specs[name] = spec
        for spec in list(specs.values()):
            metric = spec[0]
            if metric and spec[1] and metric not in values and metric not in others and metric in latest:
                if self.emittable(metric):
                    values[metric] = latest[metric]
                    specs.setdefault(metric, spec_of(metric))
                else:
                    others[metric] = latest[metric]
        out = []
        isfinite = math.isfinite
        for name, value in values.items():
            step = row
            spec = specs.get(name)
            if spec is not None:
                metric = spec[0]
                if metric:
                    x = values.get(metric)
                    if x is None:
                        x = others.get(metric)
                    if x is not None and isfinite(x):
                        step = x
            out.append((name, value, step, row, times.get(name, ts) if times else ts))
        return [(row, out)]


def record_row(step, last_row: Optional[int]) -> int:
    """The row of a non-wandb record at ``step`` (see the module docstring)."""
    if type(step) is int and step >= 0:
        return step
    if isinstance(step, float) and step.is_integer() and step >= 0:
        return int(step)
    return 0 if last_row is None else last_row + 1
