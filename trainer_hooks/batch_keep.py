"""A copy of one training batch, kept inside the compiled step on the steps a condition picks.

Two host-side replays need a batch the train step saw: the origin of a non-finite
step (origin.py) and the activation probe when no ``probe_data`` is given
(probe.py). The copy is taken in a branch that only the chosen steps take, so the
other steps pay one predicate and an untaken branch.

XLA (``jit_compile``) compiles neither ``tf.string`` nor a variable whose shape
changes inside a branch. So each flattened input has a variable of its own dtype;
outside XLA it takes the batch whole (its shape may change); under XLA it holds
a fixed ``rows`` examples, the batch cropped or zero-padded to that, with the
number of real rows beside it. XLA copies a variable the step may write on every
step, taken or not, so under XLA the rows are few (and within ``XLA_BUDGET_BYTES``); ``fit`` avoids
that by keeping the batch after the compiled step, outside XLA (``OriginFinder.keep_outside``).
An input needs a static per-example shape there (known while tracing); when it has
none, nothing is kept and ``unavailable`` says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops
from tensorflow.python.ops import control_flow_util

#: Under XLA, at most this many bytes per kept batch: XLA copies the variable on every step.
XLA_BUDGET_BYTES = 8 * 2**20


def in_xla_context() -> bool:
    """True while tracing a function that XLA compiles (``jit_compile=True``, Keras' "auto" on a GPU)."""
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def input_spec(model: Any) -> list[tuple[tf.TensorShape, tf.DType]] | None:
    """Shape and dtype of each flattened symbolic input of ``model``; None when it has none (subclassed)."""
    try:
        inputs = tf.nest.flatten(model.inputs)
    except Exception:
        return None
    if not inputs:
        return None
    return [(tf.TensorShape(t.shape), tf.as_dtype(t.dtype)) for t in inputs]


class KeptBatch:
    """Build eagerly from an input spec. In-graph: ``keep(x, step, when)``; on the host: ``read()``."""

    def __init__(self, spec: list[tuple[tf.TensorShape, tf.DType]], rows: int, name: str) -> None:
        self.spec = spec
        self.rows = max(1, int(rows))
        self.unavailable: str | None = None  # set while tracing when the batch cannot be kept
        self._structure: Any = None  # of the features, noted while tracing
        self.xla = False  # traced into an XLA-compiled step
        self._kept = [
            tf.Variable(
                tf.zeros([0, *[d or 0 for d in shape[1:]]], dtype),
                shape=tf.TensorShape([None] * len(shape)),
                trainable=False,
                name=f"{name}_{i}",
            )
            for i, (shape, dtype) in enumerate(spec)
        ]
        self._n = tf.Variable(0, dtype=tf.int32, trainable=False, name=f"{name}_rows")
        self._total = tf.Variable(0, dtype=tf.int32, trainable=False, name=f"{name}_total")
        self._step = tf.Variable(tf.constant(-1, tf.int64), trainable=False, name=f"{name}_step")

    # ------------------------------------------------------------------ graph side

    def keep(self, x: Any, step: tf.Tensor, when: tf.Tensor | None = None) -> None:
        """Copy the features ``x`` of step ``step`` when ``when`` is true, always if None (traced into the step)."""
        flat = tf.nest.flatten(x)
        if len(flat) != len(self._kept) or not all(isinstance(t, tf.Tensor) for t in flat):
            self.unavailable = "the batch's features do not match the model's inputs"
            return
        flat = [tf.cast(t, var.dtype) if t.dtype != var.dtype else t for t, var in zip(flat, self._kept)]
        self.xla = in_xla_context()
        if self.xla and not all(t.shape.rank is not None and t.shape[1:].is_fully_defined() for t in flat):
            self.unavailable = "under XLA (jit_compile) the features need a static shape per example"
            return
        if self.xla:
            per_row = sum(t.shape[1:].num_elements() * t.dtype.size for t in flat)
            self.rows = max(1, min(self.rows, XLA_BUDGET_BYTES // max(per_row, 1)))
            with tf.init_scope():  # the variables' shape is fixed before XLA compiles the step
                for t, var in zip(flat, self._kept):
                    var.assign(tf.zeros([self.rows, *t.shape[1:]], var.dtype))
        self._structure = tf.nest.map_structure(lambda _: 0, x)
        self.unavailable = None

        def take() -> tf.Tensor:
            total = tf.shape(flat[0])[0]
            for t, var in zip(flat, self._kept):
                if self.xla:
                    part = t[: self.rows]
                    pad = [[0, self.rows - tf.shape(part)[0]]] + [[0, 0]] * (t.shape.rank - 1)
                    var.assign(tf.pad(part, pad))
                else:
                    var.assign(t)
            self._n.assign(tf.minimum(total, self.rows) if self.xla else total)
            self._total.assign(total)
            self._step.assign(tf.cast(step, tf.int64))
            return tf.constant(True)

        if when is None:  # already inside a branch only the chosen steps take
            take()
        else:
            tf.cond(when, take, lambda: tf.constant(False))

    def empty(self) -> tf.Tensor:
        """In-graph: True until a batch was kept."""
        return self._step.read_value() < 0

    # ------------------------------------------------------------------ host side

    @property
    def kept_step(self) -> int:
        """The step whose batch is kept now (-1: none yet)."""
        return int(self._step.numpy())

    def read(self) -> tuple[Any, bool] | None:
        """``(features, complete)`` as last kept, or None; ``complete`` is False when the batch was cropped."""
        if self._structure is None or self.kept_step < 0:
            return None
        n = int(self._n.numpy())
        flat = [np.asarray(var.numpy())[:n] for var in self._kept]
        return tf.nest.pack_sequence_as(self._structure, flat), n == int(self._total.numpy())
