"""Where a non-finite step came from: the input features, the labels, or the first layer.

``OriginFinder`` is traced into the train step inside the branch that only runs
on a non-finite step, so healthy steps pay nothing: on such a step it counts
non-finite elements in the batch's features and labels and replays the batch
layer by layer (inference mode, no side effects) to find the first layer whose
output is not finite. Layer-by-layer replay needs a Sequential or functional
model; for subclassed models only features and labels are checked.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def count_nonfinite(structure: Any) -> tf.Tensor:
    """Non-finite elements in every floating tensor of a nested structure."""
    total = tf.constant(0.0)
    for t in tf.nest.flatten(structure):
        if t is None:
            continue
        t = tf.convert_to_tensor(t)
        if t.dtype.is_floating:
            total += tf.reduce_sum(tf.cast(~tf.math.is_finite(t), tf.float32))
    return total


class OriginFinder:
    """``finder(x, y) -> (features_bad, labels_bad, first_bad_layer_index or -1)``, graph-safe."""

    def __init__(self, model: Any) -> None:
        self.layer_names: list[str] = []
        self._replay: keras.Model | None = None
        try:
            layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
            replay = keras.Model(model.inputs, [layer.output for layer in layers])
        except Exception:
            return
        self._replay = replay
        self.layer_names = [getattr(layer, "path", None) or layer.name for layer in layers]

    def __call__(self, x: Any, y: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        features, labels = count_nonfinite(x), count_nonfinite(y)
        if self._replay is None:
            return features, labels, tf.constant(-1.0)
        outputs = self._replay(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        bad = tf.stack([tf.reduce_any(~tf.math.is_finite(tf.cast(o, tf.float32))) for o in outputs])
        first = tf.cast(tf.argmax(tf.cast(bad, tf.int32)), tf.float32)
        return features, labels, tf.where(tf.reduce_any(bad), first, -1.0)
