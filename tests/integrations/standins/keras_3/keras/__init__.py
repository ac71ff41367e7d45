"""Stand-in for ``keras`` **3.15.1** (keras-team/keras, PyPI 2026-07), the parts the exporter
relies on: ``keras.Model.fit(x, y, batch_size, epochs, verbose, callbacks, ...)`` runs
``on_train_begin`` -> per epoch ``on_epoch_begin``, per batch ``on_train_batch_begin`` /
``on_train_batch_end(step, logs)``, ``on_epoch_end(epoch, logs)`` (``val_*`` keys when
validation data is given) -> ``on_train_end``, through a ``CallbackList``; callbacks come
from ``keras.callbacks.Callback``; ``keras.backend.backend()`` names the backend.
Our own minimal re-implementation (not Keras's code); the "model" is a numpy linear
regression trained by gradient descent.
"""

import numpy as np

from . import backend, callbacks  # noqa: F401

__version__ = "3.15.1"


class Model:
    def __init__(self, units=1):
        self.units = units
        self.weights = None
        self.history = None

    def compile(self, optimizer="sgd", loss="mse", learning_rate=0.1):
        self.learning_rate = learning_rate

    def _train_step(self, x, y):
        pred = x @ self.weights
        err = pred - y
        self.weights -= self.learning_rate * (x.T @ err) / len(x)
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1):
        from .callbacks import CallbackList, History

        if self.weights is None:
            self.weights = np.zeros((x.shape[1], self.units))
        self.history = History()
        callback_list = CallbackList(callbacks, model=self, extra=[self.history])
        batch_size = batch_size or 32
        steps = max(1, int(np.ceil(len(x) / batch_size)))
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            for step in range(steps):
                callback_list.on_train_batch_begin(step)
                sl = slice(step * batch_size, (step + 1) * batch_size)
                logs = self._train_step(x[sl], y[sl])
                callback_list.on_train_batch_end(step, logs)
            epoch_logs = dict(logs)
            if validation_data is not None:
                vx, vy = validation_data
                err = vx @ self.weights - vy
                epoch_logs.update({"val_loss": float(np.mean(err ** 2)), "val_mae": float(np.mean(np.abs(err)))})
            callback_list.on_epoch_end(epoch, epoch_logs)
        callback_list.on_train_end(logs)
        return self.history


class Sequential(Model):
    pass
