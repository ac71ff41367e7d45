"""Turn what users log into (name, float) points, off the training thread.

Accepted: int/float/bool, numpy scalars and one-element arrays, one-element torch
tensors, JAX scalars, anything ``numbers.Real``; nested mappings are flattened with
``.``.  NaN and ±Inf are kept.  Everything else (strings, media, lists, ``None``)
is filtered, counted, and named once in the debug log.
"""

import gc
import logging
import math
import numbers
from typing import Any, Dict, List, Mapping, Tuple

from .. import limits

#: Names the Lens backend reserves (user guide FAQ Q2).
RESERVED_NAMES = frozenset({"step", "run_id", "source", "history", "created_at", "updated_at"})
#: Our own system metrics keep their leading underscore; wandb's internal ``_`` keys do not.
OWN_PREFIX = "_primus_"
#: The server's limit (limits.py holds the one definition both sides check).
MAX_NAME_LENGTH = limits.MAX_NAME_LEN
MAX_DEPTH = 32

# Types whose values are immutable and need no snapshot at log time.
PLAIN_TYPES = frozenset({int, float, bool, str, type(None)})


def name_problem(name: Any) -> str:
    """Why a metric name is rejected, or ``""`` when it is fine."""
    if not isinstance(name, str):
        return "name is not a string"
    problem = limits.metric_name_problem(name)
    if problem:
        # The server would refuse this point: the same words as its per-point answer.
        return _refused(name, "name " + problem)
    if name in RESERVED_NAMES:
        return "reserved name"
    if name.startswith("_") and not name.startswith(OWN_PREFIX):
        return "wandb internal key"
    return ""


def to_float(value: Any):
    """The float a logged value stands for, or ``None`` when it is not a number."""
    kind = type(value)
    if kind is float:
        return value
    if kind is int or kind is bool:
        try:
            return float(value)
        except OverflowError:
            return None
    module = getattr(kind, "__module__", "") or ""
    if module.startswith(("torch", "numpy", "jax", "jaxlib", "tensorflow", "cupy")):
        try:
            size = getattr(value, "size", None)
            size = size() if callable(size) else size  # torch: size() is a method; numel() is the count
            numel = value.numel() if hasattr(value, "numel") else size
            if numel is not None and numel != 1:
                return None
            if hasattr(value, "dtype") and "complex" in str(value.dtype):
                return None
            if "bool" in str(getattr(value, "dtype", "")):
                return 1.0 if bool(value.item() if hasattr(value, "item") else value) else 0.0
            item = value.item() if hasattr(value, "item") else value
            if isinstance(item, (str, bytes)):
                return None
            return float(item)
        except Exception:
            return None
    if isinstance(value, numbers.Real) and not isinstance(value, (str, bytes)):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def flatten(data: Mapping, prefix: str = "", depth: int = 0,
            points: List = None, filtered: List = None) -> Tuple[List[Tuple[str, float]], List[Tuple[str, str]]]:
    """Flatten ``data`` into points and a list of (name, reason) for what was filtered."""
    if points is None:
        points, filtered = [], []
    good = _GOOD_NAMES
    for key, value in data.items():
        if not prefix and key in good and type(value) is float:
            points.append((key, value))  # the common case: a known name with a float
            continue
        problem = name_problem(key)
        if problem and not (prefix and isinstance(key, str) and key):
            # Nested keys may start with "_" or be "step": only the top level is reserved.
            filtered.append((_safe_name(prefix, key), problem))
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if depth >= MAX_DEPTH:
                filtered.append((name, "nested too deep"))
                continue
            flatten(value, name + ".", depth + 1, points, filtered)
            continue
        number = to_float(value)
        if number is None:
            filtered.append((name, f"non-numeric value ({type(value).__name__})"))
            continue
        if prefix:
            # The full dotted name of a nested key (its parts passed only the short checks).
            problem = limits.metric_name_problem(name)
            if problem:
                filtered.append((_safe_name("", name), _refused(name, "name " + problem)))
                continue
        points.append((name, number))
        if not prefix and len(good) < 100_000:
            good.add(key)
    return points, filtered


def _refused(name, reason):
    """A name Lens would refuse: said once per cause (W&B accepts it, so the user should know)."""
    from .log import log_once

    log_once(("name-refused", reason), logging.WARNING,
             "metric %s is not sent to Lens: its %s (counted in filtered_points; W&B still has it; "
             "this line is printed once per cause)", _safe_name("", name).encode("unicode_escape").decode(), reason)
    return reason


# Top-level names already accepted once (only strings that passed name_problem get here).
# Process-wide on purpose: a name's verdict does not depend on the run or the recorder.
_GOOD_NAMES = set()


def known_names() -> set:
    """Top-level names already accepted as points (the worker's fast path: ``keys() <= known_names()``)."""
    return _GOOD_NAMES


def _safe_name(prefix, key):
    try:
        text = key if isinstance(key, str) else repr(key)
    except Exception:
        text = "<unprintable>"
    text = f"{prefix}{text}"
    return text if len(text) <= 80 else text[:80] + "..."


def freeze(data: Dict) -> Dict:
    """A copy of ``data`` whose values cannot change after ``log`` returns.

    Two C-speed checks, no Python loop over the values in the common case:

    - a dict the garbage collector does not track holds only objects that cannot hold
      references (numbers, strings, numpy scalars): a plain copy is exact.  Tensors,
      nested dicts, lists and class instances make CPython track the dict;
    - a tracked dict whose values still ``sum()`` to a float holds only numbers (CPython
      never untracks a dict, so one that once held a tensor stays tracked).

    Anything else is snapshotted (tensors cloned, nested dicts copied).  The one mutable
    value an untracked dict can hold is a numpy *array* (not a GC type): a one-element
    array logged and then changed in place within milliseconds is read with its new
    value; numpy reductions return immutable scalars, which is what training loops log.
    The one appender inlines this same logic on its hot path (``recorder.make_log_hook``).
    """
    if not gc.is_tracked(data):
        return data.copy()
    try:
        if type(sum(data.values(), 0.0)) is float:
            return data.copy()
    except Exception:
        pass
    return snapshot(data)


def snapshot(data: Dict) -> Dict:
    """Freeze values that could change after ``log`` returns, without a device sync.

    Called on the training thread only when a value is not a plain Python scalar:
    tensors are cloned asynchronously (read later, off the thread), mutable arrays
    copied, nested mappings snapshotted recursively.
    """
    out = {}
    for key, value in data.items():
        kind = type(value)
        if kind in PLAIN_TYPES:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = snapshot(value)
        else:
            module = getattr(kind, "__module__", "") or ""
            try:
                if module.startswith("torch") and hasattr(value, "detach"):
                    value = value.detach()
                    # A CPU scalar reads in ~1 µs; a device tensor is cloned on its stream (no sync).
                    value = value.item() if (value.device.type == "cpu" and value.numel() == 1) else value.clone()
                elif module.startswith("numpy") and hasattr(value, "copy"):
                    value = value.copy()
            except Exception:
                pass
            out[key] = value
    return out


def wire_value(value: float):
    """JSON has no NaN: non-finite values travel as the strings Lens understands."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"
