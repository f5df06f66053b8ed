"""Where a non-finite step came from: the input features, the labels, or the first layer.

Nothing here runs on a healthy step. On a non-finite one the train step (inside
the branch only such steps take) counts non-finite features and labels and
keeps a serialised copy of the batch's features; the host then replays that
one batch layer by layer, once, in inference mode, to find the first layer
whose output is not finite. Keeping the replay out of the compiled step matters:
a forward pass sitting in an untaken branch still costs every healthy step.

The replay uses the weights as they are when the host looks, which are the
weights of the bad step when ``guard_nonfinite`` skipped its update; without the
guard the update may already have written NaN into them, and the session says
so instead of naming a layer. Layer-by-layer replay needs a Sequential or
functional model; for subclassed models only features and labels are checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def explain_nonfinite(
    u: dict[str, Any], loss_recorded: bool, first_bad_layer: Callable[[], str | None]
) -> tuple[str, str | None, str]:
    """``(source, layer, detail)`` of a non-finite step, from its unpacked statistics row ``u``.

    ``first_bad_layer`` replays the batch; it is called only when the inputs are clean and the
    weights can still be trusted.
    """
    poisoned = int(u["weight_nonfinite"])
    if u["origin_features"] > 0:
        return "features", None, f"{int(u['origin_features'])} non-finite values in this batch's input features"
    if u["origin_labels"] > 0:
        return "labels", None, f"{int(u['origin_labels'])} non-finite values in this batch's labels"
    if poisoned and not u["skipped"]:
        return ("unknown", None, f"the step's update already wrote {poisoned} non-finite weights, so the batch "
                "cannot be replayed with that step's weights; guard_nonfinite=True skips such updates and lets "
                "the first non-finite layer be found")
    if (layer := first_bad_layer()) is not None:
        return "layer", layer, f"replaying the batch, {layer} is the first layer with a non-finite output"
    if loss_recorded and not math.isfinite(u["loss"]):
        return "loss", None, "the forward pass is finite but the loss is not"
    return "unknown", None, "inputs, labels and layer outputs are finite; the backward pass overflowed"


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
    """Build eagerly. In-graph: ``inspect(x, y, step)``; on the host: ``first_bad_layer(step)``."""

    def __init__(self, model: Any) -> None:
        self.layer_names: list[str] = []
        self._replay: keras.Model | None = None
        self._structure: Any = None  # of the features, noted while tracing
        self._dtypes: list[tf.DType] = []
        self._kept = tf.Variable(tf.zeros([0], tf.string), shape=tf.TensorShape([None]), trainable=False,
                                 name="gw_kept_batch")
        self._kept_step = tf.Variable(tf.constant(-1, tf.int64), trainable=False, name="gw_kept_step")
        try:
            layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
            replay = keras.Model(model.inputs, [layer.output for layer in layers])
        except Exception:
            return
        self._replay = replay
        self.layer_names = [getattr(layer, "path", None) or layer.name for layer in layers]

    # ------------------------------------------------------------------ graph side

    def inspect(self, x: Any, y: Any, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Non-finite counts in features and labels; keeps the features for ``first_bad_layer``."""
        flat = tf.nest.flatten(x)
        if self._replay is not None and flat and all(isinstance(t, tf.Tensor) for t in flat):
            self._structure, self._dtypes = tf.nest.map_structure(lambda _: 0, x), [t.dtype for t in flat]
            self._kept.assign(tf.stack([tf.io.serialize_tensor(t) for t in flat]))
            self._kept_step.assign(tf.cast(step, tf.int64))
        return count_nonfinite(x), count_nonfinite(y)

    # ------------------------------------------------------------------ host side

    def first_bad_layer(self, step: int) -> int | None:
        """Index into ``layer_names`` of the first non-finite output for the batch kept at ``step``.

        -1 when every layer's output is finite; ``None`` when that batch was not kept.
        """
        if self._replay is None or int(self._kept_step.numpy()) != step:
            return None
        blobs = self._kept.numpy()
        flat = [tf.io.parse_tensor(b, dtype) for b, dtype in zip(blobs, self._dtypes)]
        outputs = self._replay(tf.nest.pack_sequence_as(self._structure, flat), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, out in enumerate(outputs):
            if not np.isfinite(keras.ops.convert_to_numpy(out)).all():
                return i
        return -1
