"""Patching someone else's code safely (after MLflow's ``safe_patch`` contract).

Every patch goes through here: :func:`patch` with :func:`then` / :func:`around` (or
:func:`patch_after` / :func:`patch_around`), :func:`guard` for our callback methods and
:func:`call_ours` for one guarded call.  These are the only ``try/except -> our_error``
sites; the wandb ``_log`` hot path inlines the same contract for speed (its docstring).

- The user's exceptions propagate unchanged; the original always runs, also when
  our code before it failed.
- Our exceptions are caught, counted and logged once; ``PRIMUS_LENS_TESTING=1``
  makes them raise so tests see them.
- Every patch is recorded and can be undone; patching twice is a no-op.
"""

import functools
import logging
import threading

from .log import log_once, raise_if_testing

# Process-wide by nature (a patch changes a class for the whole interpreter): the record of
# what we patched, so uninstall() can undo it, and the count of our errors (stats, tests).
_patches = []  # (owner, attribute name, original as found in owner.__dict__, had_own)
_undo_actions = []  # callables run by undo_all() (registered hooks are not attributes)
MARK = "_primus_lens_original"
errors = {"count": 0}


def our_error(where, exc):
    """Record an error of ours; never lets it reach the training loop (unless testing)."""
    errors["count"] += 1
    log_once(("patch", where, type(exc).__name__), logging.WARNING,
             "error in %s (counted; training unaffected, this integration keeps going): %r", where, exc)
    raise_if_testing(exc)


def is_patched(owner, name) -> bool:
    return hasattr(owner.__dict__.get(name), MARK) if hasattr(owner, "__dict__") else False


def patch(owner, name, make_wrapper):
    """Replace ``owner.name`` with ``make_wrapper(original)``; idempotent and undoable."""
    own = owner.__dict__.get(name, None) if hasattr(owner, "__dict__") else None
    if own is not None and hasattr(own, MARK):
        return own
    original = getattr(owner, name)
    wrapper = make_wrapper(original)
    try:
        functools.update_wrapper(wrapper, original)
    except (AttributeError, TypeError):
        pass
    setattr(wrapper, MARK, original)
    _patches.append((owner, name, own, own is not None))
    setattr(owner, name, wrapper)
    return wrapper


def call_ours(where, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, our code: an exception is counted and logged by :func:`our_error`
    (raised only under ``PRIMUS_LENS_TESTING``); returns ``None`` then."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        our_error(where, exc)
        return None


def guard(where):
    """Decorator for our callback methods that a framework calls (``LensCallback.setup``,
    ``on_log`` ...): frameworks rarely catch, so our error must stop here (returns ``None``)."""
    def decorate(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                our_error(where, exc)
                return None
        return guarded
    return decorate


def then(where, report, *, result=False, always=False):
    """A ``make_wrapper`` for :func:`patch`: call the original, then ``report`` with the same
    arguments (``report(result, *args, **kwargs)`` with ``result=True``; also when the original
    raised with ``always=True``).  The original's result and exceptions pass through untouched;
    an error in ``report`` (ours) is counted and logged by :func:`our_error`, never raised."""
    def make(original):
        if always:
            def wrapper(*args, **kwargs):
                try:
                    return original(*args, **kwargs)
                finally:
                    try:
                        report(*args, **kwargs)
                    except Exception as exc:
                        our_error(where, exc)
        elif result:
            def wrapper(*args, **kwargs):
                value = original(*args, **kwargs)
                try:
                    report(value, *args, **kwargs)
                except Exception as exc:
                    our_error(where, exc)
                return value
        else:
            def wrapper(*args, **kwargs):
                value = original(*args, **kwargs)
                try:
                    report(*args, **kwargs)
                except Exception as exc:
                    our_error(where, exc)
                return value
        return wrapper
    return make


class _Failed:
    """Our ``before`` raised: reported after the original ran (the original always runs)."""

    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


def around(where, before, after, during=None):
    """A ``make_wrapper`` for :func:`patch`: ``plan = before(*args, **kwargs)`` (ours, cheap:
    bind the arguments, decide what to report), the original, then ``after(plan, *args,
    **kwargs)`` when ``plan`` is not ``None``.  An error in ``before`` is reported only after
    the original ran, so the user's call is never skipped or delayed by ours.  ``during``: a
    context manager factory around the original call (thread-local capture state)."""
    def make(original):
        def wrapper(*args, **kwargs):
            try:
                plan = before(*args, **kwargs)
            except Exception as exc:
                plan = _Failed(exc)
            if during is None:
                value = original(*args, **kwargs)  # the framework's own errors propagate untouched
            else:
                with during():
                    value = original(*args, **kwargs)
            if plan is not None:
                try:
                    if isinstance(plan, _Failed):
                        raise plan.exc
                    after(plan, *args, **kwargs)
                except Exception as exc:
                    our_error(where, exc)
            return value
        return wrapper
    return make


def patch_after(owner, name, where, report, **options):
    """``patch(owner, name, then(where, report, **options))``."""
    return patch(owner, name, then(where, report, **options))


def patch_around(owner, name, where, before, after, during=None):
    """``patch(owner, name, around(where, before, after, during))``."""
    return patch(owner, name, around(where, before, after, during))


def on_undo(action):
    """Run ``action()`` when every patch is undone (``uninstall()``); for registered hooks."""
    _undo_actions.append(action)


def undo_all():
    """Restore every patched attribute (``uninstall()``, tests)."""
    while _undo_actions:
        try:
            _undo_actions.pop()()
        except Exception:
            pass
    while _patches:
        owner, name, own, had_own = _patches.pop()
        try:
            if not hasattr(getattr(owner, name, None), MARK):
                # Someone wrapped our wrapper (Primus wraps Megatron's training_log after us):
                # restoring would silently drop their wrapper too, so ours stays in the chain.
                continue
            if had_own:
                setattr(owner, name, own)
            else:
                delattr(owner, name)
        except Exception:
            pass


class _Suppress(threading.local):
    depth = 0
    watching = 0  # > 0: this thread's wandb log calls are counted in ``logged`` (watch_raw_logs)
    logged = 0


suppress_state = _Suppress()
#: Number of suppress and watch contexts open in any thread: the hot path reads this plain
#: list first and only calls :func:`suppressed_here` when some adapter suppresses or watches.
suppress_active = [0]


def suppressed_here() -> bool:
    """The hot path's slow branch (some thread suppresses or watches): this thread's call is
    counted for a watcher; True when this thread suppresses the raw capture."""
    state = suppress_state
    if state.watching:
        state.logged += 1
    return bool(state.depth)


class watch_raw_logs:
    """Counts the wandb ``log`` calls this thread makes while active (``count``, at exit): an
    adapter learns whether the code it called logged to W&B itself (recorded as usual)."""

    def __enter__(self):
        suppress_state.watching += 1
        suppress_active[0] += 1
        self._start = suppress_state.logged
        self.count = 0
        return self

    def __exit__(self, *exc):
        suppress_state.watching -= 1
        suppress_active[0] -= 1
        self.count = suppress_state.logged - self._start
        return False


class suppress_raw_capture:
    """While active on this thread, the raw wandb patch does not report ``log`` calls.

    A framework adapter that reports metrics itself wraps the framework's own wandb
    logging in this, so each metric is reported exactly once.
    """

    def __enter__(self):
        suppress_state.depth += 1
        suppress_active[0] += 1
        return self

    def __exit__(self, *exc):
        suppress_state.depth -= 1
        suppress_active[0] -= 1
        return False
