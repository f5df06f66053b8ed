"""The reference gradients, taken in the plain run with no gradwatch code, and the loss Keras logs.

``Recorder`` wraps one optimizer's ``apply`` (the one door both ``fit`` and ``apply_gradients`` go
through): inside the compiled step it writes ``tf.norm(tf.convert_to_tensor(g))`` of every gradient it
receives (unscaled by a ``LossScaleOptimizer``'s dynamic scale) into a variable of its own.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

#: Rows the reference recorder keeps per optimizer: every pattern trains fewer steps than this.
CAPACITY = 256


class Recorder:
    """Wraps one optimizer's ``apply``: row k holds the gradient norms of its k-th call (plain run only)."""

    def __init__(self, optimizer: Any, offset: int) -> None:
        self.optimizer = optimizer
        self.offset = offset  # run steps trained before this optimizer's first update
        self.paths: list[str] = []
        self.norms: tf.Variable | None = None
        self.count: tf.Variable | None = None
        original = optimizer.apply

        def apply(grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> Any:
            variables = list(trainable_variables) if trainable_variables is not None else None
            self._record(list(grads), variables or list(optimizer._trainable_variables))
            return original(grads, trainable_variables)

        optimizer.apply = apply

    def _record(self, grads: list[Any], variables: list[Any]) -> None:
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if self.norms is None:
            with tf.init_scope():  # ONLY_FIRST_REPLICA: writable from a replica's step under a strategy
                self.paths = [v.path for _, v in present]
                agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
                self.norms = tf.Variable(tf.zeros([CAPACITY, len(present)]), trainable=False, aggregation=agg)
                self.count = tf.Variable(tf.constant(0, tf.int64), trainable=False, aggregation=agg)
        assert self.count is not None
        assert [v.path for _, v in present] == self.paths, "one optimizer, one variable list"
        scale = getattr(self.optimizer, "dynamic_scale", None)  # LossScaleOptimizer: report unscaled norms
        row = []
        for g, _ in present:
            norm = tf.norm(tf.cast(tf.convert_to_tensor(g), tf.float32))
            row.append(norm if scale is None else norm / tf.cast(scale, tf.float32))
        index = tf.minimum(self.count, CAPACITY - 1)
        self.norms.assign(tf.tensor_scatter_nd_update(self.norms, [[index]], [tf.stack(row)]))
        self.count.assign_add(1)

    def rows(self) -> dict[int, dict[str, float]]:
        """Run step -> {variable path: gradient norm}."""
        if self.norms is None or self.count is None:
            return {}
        n = int(self.count.numpy())
        assert n <= CAPACITY, f"{n} updates: raise CAPACITY"
        table = self.norms.numpy()[:n].astype(np.float64)
        return {self.offset + k: dict(zip(self.paths, table[k])) for k in range(n)}


class LossLog(keras.callbacks.Callback):  # type: ignore[misc]
    """The loss ``fit`` hands the callbacks after each batch (in both runs alike): the epoch's running mean.

    With equal batches, step k's own loss follows from two running means: (k+1)·m_k − k·m_(k−1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.means: list[float] = []
        self.own: list[float] = []
        self._k = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._k = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean, k = float((logs or {})["loss"]), self._k
        self.own.append(mean if k == 0 else (k + 1) * mean - k * self.means[-1])
        self.means.append(mean)
        self._k += 1

    def matches(self, index: int, reported: float) -> bool:
        """The step's own loss (1e-4: the difference of two float32 means), or the running mean Keras logged."""
        own, mean = self.own[index], self.means[index]
        return math.isclose(reported, own, rel_tol=1e-4) or math.isclose(reported, mean, rel_tol=1e-6)


def reference(recorders: list[Recorder]) -> dict[int, dict[str, float]]:
    """Run step -> {path: norm}, merging every optimizer of one run (a GAN updates two per step)."""
    out: dict[int, dict[str, float]] = collections.defaultdict(dict)
    for rec in recorders:
        for step, row in rec.rows().items():
            out[step].update(row)
    return dict(out)
