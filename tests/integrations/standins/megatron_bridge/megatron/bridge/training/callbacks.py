"""Stand-in for ``src/megatron/bridge/training/callbacks.py`` of NVIDIA-NeMo/Megatron-Bridge
main 067f987d (2026-08-22).  Our own minimal re-implementation of the public surface:

- ``Callback`` with no-op event methods (``on_train_step_end`` ...);
- ``CallbackContext`` (state, model, user_state, optimizer, scheduler, loss_dict,
  grad_norm, skipped_iter);
- ``CallbackManager.add`` registers only the methods a subclass overrides;
  ``fire`` lets callback exceptions propagate;
- ``normalize_callbacks(None) -> None``; a list becomes a manager; ``should_fire``.
"""

from dataclasses import dataclass, field

VALID_EVENTS = frozenset({"on_train_start", "on_train_step_start", "on_train_step_end", "on_train_end"})


@dataclass
class CallbackContext:
    state: object
    model: list
    user_state: dict = field(default_factory=dict)
    optimizer: object = None
    scheduler: object = None
    loss_dict: dict = None
    grad_norm: float = None
    skipped_iter: bool = None


class Callback:
    def on_train_start(self, context):
        pass

    def on_train_step_start(self, context):
        pass

    def on_train_step_end(self, context):
        pass

    def on_train_end(self, context):
        pass


class CallbackManager:
    def __init__(self):
        self._callbacks = {event: [] for event in VALID_EVENTS}
        self._active_events = set()
        self._user_state = {}

    @property
    def user_state(self):
        return self._user_state

    def add(self, callback):
        for cb in callback if isinstance(callback, list) else [callback]:
            for event in VALID_EVENTS:
                method = getattr(cb, event, None)
                if method is not None and method.__func__ is not getattr(Callback, event):
                    self._callbacks[event].append(method)
                    self._active_events.add(event)

    def register(self, event_name, fn):
        if event_name not in VALID_EVENTS:
            raise ValueError(f"Unknown event '{event_name}'")
        self._callbacks[event_name].append(fn)
        self._active_events.add(event_name)

    def list_callbacks(self, event_name):
        return list(self._callbacks[event_name])

    def has_callbacks(self, event_name):
        return event_name in self._active_events

    def fire(self, event_name, context):
        for fn in self._callbacks[event_name]:
            fn(context)


def normalize_callbacks(callbacks):
    if callbacks is None:
        return None
    if isinstance(callbacks, CallbackManager):
        return callbacks
    manager = CallbackManager()
    manager.add(callbacks)
    return manager


def should_fire(callback_manager, event_name):
    return callback_manager is not None and callback_manager.has_callbacks(event_name)
