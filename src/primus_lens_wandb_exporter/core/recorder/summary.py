"""A W&B run's summary, as wandb itself computes it (wandb 0.31; worker thread only).

W&B's rule, in ``wandb-core`` (the Go service behind ``wandb.log``: ``core/internal/runsummary``,
``core/internal/runmetric``, ``core/internal/stream/handler.go``) -- docs/wandb-history.md, "Summary":

- each closed history row updates the summary of every key it holds: the last value, unless
  ``define_metric(name, summary="min,max,mean,first,last" | "none")`` configured the key (by
  name, or by the ``prefix*`` glob it is bound to when first seen): then a dict of those
  aggregates (``{"min": .., "max": ..}``) over every value logged since the key's first; "none":
  no summary.  min/max/mean follow IEEE arithmetic as Go's does (one NaN makes them NaN);
- ``run.summary[k] = v`` sets ``k`` to ``v`` and drops its aggregates (until the next
  ``define_metric`` of ``k``); a later row holding ``k`` replaces it again; ``del run.summary[k]``
  removes ``k`` (and the keys nested under it) until it is logged again;
- a ``define_metric`` changes nothing until the key's next value: W&B writes a summary
  update only when a row or an explicit write touches the key.

Keys are Lens metric names (nested values flattened with ``.``, as history points are);
``as_dict`` nests them back into W&B's shape.  The plain-key case costs the worker one
``dict.update`` per row (``Worker._drain``'s fast path); aggregates exist only for keys a
``define_metric`` configured, and such runs never take the fast path.
"""

import math

from .. import normalize
from .stats import _jsonable

# wandb-core's SummaryTypeFlags; "copy" and "best" (older wandb) set no flag there.
LAST, MIN, MAX, MEAN, FIRST = 1, 2, 4, 8, 16
_FLAGS = {"last": LAST, "min": MIN, "max": MAX, "mean": MEAN, "first": FIRST}
_MISSING = object()


def parse_options(summary):
    """``define_metric``'s ``summary`` argument as ``(none, flags)``; ``None`` when not given."""
    if not summary or not isinstance(summary, str):
        return None
    ops = {s.strip().lower() for s in summary.split(",")}
    flags = 0
    for op in ops:
        flags |= _FLAGS.get(op, 0)
    return "none" in ops, flags


class Aggregate:
    """One configured key's summary (wandb-core's ``metricSummary``)."""

    __slots__ = ("latest", "first", "min", "max", "total", "count", "track", "none", "has", "out")

    def __init__(self, has=False, latest=None):
        self.latest, self.first = latest, None
        self.min = self.max = self.total = 0.0
        self.count = 0
        self.track, self.none, self.has = 0, False, has
        # What W&B last wrote for the key: it writes only when a row or an explicit write
        # touches the key, never when a definition changes.
        self.out = latest if has else _MISSING

    def update(self, value):
        self.latest = value
        if not self.has:
            self.first = value
        self.has = True
        if self.count:
            # Go's min/max: NaN once either is NaN (Python's min/max depend on argument order).
            low, high = self.min, self.max
            if low == low:
                self.min = value if value != value or value < low else low
            if high == high:
                self.max = value if value != value or value > high else high
        else:
            self.min = self.max = value
        self.total += value
        self.count += 1
        out = self.value()
        if out is not _MISSING:  # "none": wandb-core writes no update, the last one stays
            self.out = out

    def set_explicit(self, value):
        # The client's own summary record: in W&B's summary even for a "none" key.
        self.latest, self.track, self.has, self.out = value, 0, True, value

    def clear(self):
        self.latest, self.has, self.out = None, False, _MISSING

    def value(self):
        if self.none or not self.has:
            return _MISSING
        track = self.track
        if not track:
            return self.latest
        out = {}
        if track & LAST:
            out["last"] = self.latest
        if track & FIRST:
            out["first"] = self.first
        if track & MAX:
            out["max"] = self.max
        if track & MIN:
            out["min"] = self.min
        if track & MEAN:
            out["mean"] = self.total / self.count if self.count else math.nan
        return out


class RunSummary:
    """One run's summary: history rows, explicit writes and ``define_metric`` options, in order."""

    __slots__ = ("latest", "explicit", "aggregates", "options", "globs", "settled", "unmatched")

    def __init__(self):
        self.latest = {}  # name -> its last history value (the worker's fast path updates it)
        # name -> value of ``run.summary[name] = value``; the name is taken out of ``latest``
        # then, so a later row holding it (back in ``latest``) wins without a check per row.
        self.explicit = {}
        self.aggregates = {}  # name -> Aggregate: keys a define_metric summary option configured
        self.options = {}  # defined name -> [none, flags], merged as wandb-core merges definitions
        self.globs = {}  # "prefix*" -> [none, flags]
        self.settled = set()  # names defined by name or bound to a glob (bound once, as wandb-core)
        self.unmatched = set()  # names no glob matches (until the next glob)

    # -------------------------------------------------------------- define_metric
    def define(self, name, summary=None, overwrite=False):
        """A ``define_metric`` call (after wandb accepted it)."""
        if not name:
            return
        parsed = parse_options(summary)
        glob = name.endswith("*")
        table = self.globs if glob else self.options
        spec = [False, 0] if overwrite or name not in table else table[name]
        if parsed is not None:  # wandb-core: a given summary sets "none" and adds its flags
            spec[0] = parsed[0]
            spec[1] |= parsed[1]
        table[name] = spec
        if glob:
            self.unmatched.clear()
        else:
            self.settled.add(name)
            self._configure(name, spec)  # wandb-core configures the key on every definition by name

    def _configure(self, name, spec):
        agg = self.aggregates.get(name)
        if agg is None:
            if not (spec[0] or spec[1]):
                return  # a plain key stays plain
            if name in self.latest:
                agg = Aggregate(True, self.latest[name])
            elif name in self.explicit:
                agg = Aggregate(True, self.explicit[name])
            else:
                agg = Aggregate()
            self.aggregates[name] = agg
        agg.none, agg.track = spec[0], spec[1]

    def _bind(self, names):
        """wandb-core binds a key seen in a row to a glob once (the longest prefix here, as
        ``core/steps.py`` does), then configures it by that glob's options."""
        globs, settled, unmatched = self.globs, self.settled, self.unmatched
        for name in names:
            if name in settled or name in unmatched or name.startswith("_"):
                continue
            best = max((g for g in globs if name.startswith(g[:-1])), key=len, default=None)
            if best is None:
                unmatched.add(name)
                continue
            settled.add(name)
            spec = self.options[name] = list(globs[best])
            self._configure(name, spec)

    # -------------------------------------------------------------------- updates
    def row(self, points):
        """A closed history row: its ``(name, value, ...)`` points (numbers)."""
        if self.globs:
            self._bind([p[0] for p in points])
        self.latest.update([p[:2] for p in points])
        aggregates = self.aggregates
        if aggregates:
            for point in points:
                agg = aggregates.get(point[0])
                if agg is not None:
                    agg.update(point[1])

    def set(self, items, history_keys):
        """``run.summary`` writes: ``{dotted name: value}`` (dict values flattened)."""
        explicit = self.explicit
        for key, value in items.items():
            if isinstance(value, dict) and explicit:
                # A dict replaces the one written at the same key before, not merges into it.
                prefix = key + "."
                for name in [n for n in explicit if n.startswith(prefix)]:
                    del explicit[name]
        # JSON-safe copies: the worker keeps no user object (a JAX array freed by this thread
        # at interpreter exit aborts the process; tests/core/test_faults.py).
        for name, value in _flat(_jsonable(items)):
            agg = self.aggregates.get(name)
            if agg is not None:
                agg.set_explicit(value)
                continue
            if self.latest.pop(name, _MISSING) is not _MISSING:
                history_keys.add(name)  # still a history key (summary-only points, runs.py)
            explicit[name] = value

    def remove(self, names):
        """``del run.summary[k]``: ``k`` and every key nested under it."""
        for key in names:
            prefix = key + "."
            for table in (self.latest, self.explicit):
                for name in [n for n in table if n == key or n.startswith(prefix)]:
                    del table[name]
            if key in self.aggregates:
                self.aggregates[key].clear()  # a leaf: cleared, its options kept
            for name in [n for n in self.aggregates if n.startswith(prefix)]:
                del self.aggregates[name]  # a subtree: wandb-core drops its leaves, options and all

    # --------------------------------------------------------------------- output
    def flat(self):
        """``{dotted name: value}`` as W&B's summary holds it now (W&B-internal keys left out)."""
        out = {k: v for k, v in self.explicit.items() if k not in self.latest}
        out.update(self.latest)
        for name, agg in self.aggregates.items():
            if agg.out is _MISSING:
                out.pop(name, None)
            else:
                out[name] = agg.out
        return {k: v for k, v in out.items() if _kept(k)}

    def as_dict(self):
        """The summary in W&B's nested shape (``{"a": {"b": 1}, "loss": {"min": 0.1}}``)."""
        return nest(self.flat())


def _kept(name):
    """W&B's own keys (``_step``, ``_runtime``, ``_wandb`` ...) and the names Lens reserves are
    not summary keys in Lens, as they are not metrics (core/normalize.py)."""
    top = name.split(".", 1)[0]
    return not ((top.startswith("_") and not top.startswith(normalize.OWN_PREFIX))
                or top in normalize.RESERVED_NAMES)


def _flat(items, prefix=""):
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and "_type" not in value:
            yield from _flat(value, name + ".")
        else:
            yield name, value


def nest(flat):
    """Dotted names back into nested dicts; a name that clashes with a value stays dotted."""
    out = {}
    for name, value in flat.items():
        node, parts = out, name.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                parts = parts[:i] + [".".join(parts[i:])]
                break
            node = child
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last].update(value)
        else:
            node[last] = dict(value) if isinstance(value, dict) else value
    return out
