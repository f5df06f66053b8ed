"""Where a non-finite step came from: the input features, the labels, or the first layer.

Nothing here runs on a healthy step. On a non-finite one the train step (inside
the branch only such steps take) counts non-finite features and labels and
keeps a copy of the batch's features (batch_keep.py: one variable per input, which
XLA can compile, unlike a serialised ``tf.string``); the host then replays that
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

from .batch_keep import KeptBatch, input_spec


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
    """Build eagerly. In-graph: ``keep(x, step, healthy)``; on the host: ``first_bad_layer(step)``.

    One batch is kept (batch_keep.py): the features of a non-finite step, for the replay, and with
    ``sample_every`` > 0 those of every ``sample_every``-th step too (``samples``): the training batch
    the activation probe replays when it was given no ``probe_data``. Under XLA at most ``XLA_ROWS``
    examples are kept: XLA copies the kept variable on every step, so its size is what each step pays.
    """

    XLA_ROWS = 256

    def __init__(self, model: Any, sample_every: int = 0) -> None:
        self.layer_names: list[str] = []
        self._replay: keras.Model | None = None
        self.sample_every = sample_every
        spec = input_spec(model)
        self._kept = KeptBatch(spec, self.XLA_ROWS, "gw_kept_batch") if spec is not None else None
        self.samples = self._kept if sample_every else None
        if spec is None:
            return
        try:
            layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
            replay = keras.Model(model.inputs, [layer.output for layer in layers])
        except Exception:
            return
        self._replay = replay
        self.layer_names = [getattr(layer, "path", None) or layer.name for layer in layers]

    @property
    def notes(self) -> dict[str, str]:
        """What could not be kept, found while tracing: one line for the run's info."""
        kept = self._kept
        if self._replay is None or kept is None:
            return {}
        if kept.unavailable:
            return {"origin": f"the layer replay of a non-finite step is off ({kept.unavailable}); "
                              "non-finite features and labels are still counted"}
        if kept.xla:
            return {"origin": f"under XLA (jit_compile) the layer replay of a non-finite step covers the first "
                              f"{kept.rows} examples of its batch"}
        return {}

    # ------------------------------------------------------------------ graph side

    def keep(self, x: Any, step: tf.Tensor, healthy: tf.Tensor) -> None:
        """Keep the features of a non-finite step (to replay) and of the steps the probe is due."""
        if self._kept is None:
            return
        when = None if self._replay is None else tf.logical_not(healthy)
        if self.sample_every:  # and the first step seen, so a run resumed mid-way has a batch at once
            due = tf.equal(tf.math.floormod(step, self.sample_every), 0) | self._kept.empty()
            when = due if when is None else when | due
        if when is not None:
            self._kept.keep(x, step, when)

    # ------------------------------------------------------------------ host side

    def first_bad_layer(self, step: int) -> int | None:
        """Index into ``layer_names`` of the first non-finite output for the batch kept at ``step``.

        -1 when every layer's output is finite; ``None`` when that batch was not kept, or kept only in part
        (under XLA, a batch larger than the rows reserved for it) and its kept part is finite throughout.
        """
        if self._replay is None or self._kept is None or self._kept.kept_step != step:
            return None
        kept = self._kept.read()
        if kept is None:
            return None
        features, complete = kept
        outputs = self._replay(features, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, out in enumerate(outputs):
            if not np.isfinite(keras.ops.convert_to_numpy(out)).all():
                return i
        return -1 if complete else None
