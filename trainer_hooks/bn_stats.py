"""BatchNormalization moving statistics, summarised in-graph for every BN layer at once.

All layers' ``moving_mean`` (and ``moving_variance``) are concatenated into one
vector and summarised with a handful of segment ops, so the cost does not grow
with the number of layers: per layer mean / min / max, and the RMS change
since the previously reported step (kept in one snapshot variable per field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf


class BatchNormStats:
    """``summary(step)`` → ``[n_layers, 8]`` in ``protocol.BN_FIELDS`` order. Build eagerly."""

    def __init__(self, layers: Sequence[Any], every: int, variable: Callable[[Any, Any, str], tf.Variable]) -> None:
        self.layers = list(layers)
        self.every = every
        sizes = [int(np.prod(layer.moving_mean.shape)) for layer in self.layers]
        self._segments = tf.constant(np.repeat(np.arange(len(sizes)), sizes), tf.int32)
        self._prev = {
            attr: variable(self._concat(attr) if self.layers else tf.zeros([0]), None, f"gw_bn_prev_{attr}")
            for attr in ("moving_mean", "moving_variance")
        }

    def _concat(self, attr: str) -> tf.Tensor:
        return tf.concat([tf.reshape(tf.cast(getattr(layer, attr), tf.float32), [-1]) for layer in self.layers], 0)

    def summary(self, step: tf.Tensor) -> tf.Tensor:
        seg, n = self._segments, len(self.layers)
        report = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.every), 0)
        cols = []
        for attr, prev in self._prev.items():
            cur = self._concat(attr)
            delta = tf.sqrt(tf.math.unsorted_segment_mean(tf.square(cur - prev), seg, n))
            prev.assign(tf.where(report, cur, prev))  # "since the last report": move only on reported steps
            cols += [
                tf.math.unsorted_segment_mean(cur, seg, n),
                tf.math.unsorted_segment_min(cur, seg, n),
                tf.math.unsorted_segment_max(cur, seg, n),
                delta,
            ]
        return tf.stack(cols, axis=1)
