"""The step's own loss in a custom ``train_step`` that only tracks it with ``keras.metrics.Mean``.

Keras' default ``train_step`` hands its loss to ``optimizer.scale_loss``, where the hook sees it.
A custom one (keras-io's VAE) often computes its loss, applies the gradients, then does
``self.total_loss_tracker.update_state(total_loss)`` and returns the tracker's ``result()``: a running
mean over the epoch, which ``logs["loss"]`` carries. The step's own loss is still there: the change
of that ``Mean``'s ``total`` over the change of its ``count`` during the step, read in the same
compiled step (two scalar reads before, two after).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

#: Names that keras-io's custom train steps give the tracker of the loss they return as "loss".
LOSS_TRACKER_NAMES = ("loss", "total_loss")


def loss_tracker(model: Any) -> Any:
    """The ``keras.metrics.Mean`` tracking ``model``'s loss in a custom train step, or None.

    Only a Mean named like the loss (``LOSS_TRACKER_NAMES``): another metric's numbers must never be
    stored as the loss; without one the record says its loss is Keras' running mean.
    """
    try:
        metrics = list(model.metrics)
    except Exception:
        return None
    means = {m.name: m for m in metrics if isinstance(m, keras.metrics.Mean) and hasattr(m, "total")}
    return next((means[name] for name in LOSS_TRACKER_NAMES if name in means), None)


class StepLoss:
    """Traced around one train step: ``before()``, the step, then ``own()``: its own loss (or None)."""

    def __init__(self, model: Any) -> None:
        self._tracker = loss_tracker(model)
        self._start: tuple[tf.Tensor, tf.Tensor] | None = None

    def before(self) -> None:
        t = self._tracker
        if t is not None:
            self._start = (tf.identity(t.total.value), tf.identity(t.count.value))

    def own(self) -> tf.Tensor | None:
        t, start = self._tracker, self._start
        if t is None or start is None:
            return None
        total = tf.cast(t.total.value - start[0], tf.float32)
        count = tf.cast(t.count.value - start[1], tf.float32)
        return tf.where(count > 0, total / tf.maximum(count, 1e-30), tf.constant(float("nan")))
