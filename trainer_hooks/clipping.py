"""Gradient clipping under a live setting, inside the compiled step: Keras' own arithmetic.

``clip_gradients`` clips by global norm, per-variable norm or value, with mode
and threshold given as tensors (read from ``tf.Variable``s by the caller), so a
change from the dashboard applies on the next step without retracing. Each mode
repeats what Keras' ``BaseOptimizer._clip_gradients`` does with the same setting
(keras/src/optimizers/base_optimizer.py ``clip_by_global_norm``; the TensorFlow
backend's ``_clip_by_norm`` is ``tf.clip_by_norm``; value: ``tf.clip_by_value``),
op for op, so the optimizer receives the same bits with the monitor as without:
- global norm: ``g * (t * min(1/norm, 1/t) + (norm - norm))``; a sparse gradient leaves dense;
- per-variable norm: ``g * t / max(norm, t)``; a sparse gradient stays sparse;
- value: ``clip(g, -t, t)``; a sparse gradient stays sparse, its values bounded as given.
Keras measures a sparse (``IndexedSlices``) gradient for clipping by its values as
given, repeated ids not summed; so does the clipping here (and only the clipping).
Which kind of tensor a sparse gradient reaches the optimizer as is fixed when the
step is traced (``densify_sparse``), as in Keras.

Statistics use the exact gradient (``exact``): an ``IndexedSlices``' rows with repeated
ids summed (``summed_rows``), as many as the batch touched, never the whole table.

Every op per variable costs about a microsecond on a CPU step, whether it runs
or sits in a branch not taken, so the per-variable part is kept to a few
ops: one branch point taken only while a threshold is set, in it one multiply,
one divide and one bound per gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradwatch.protocol import CLIP_MODES

from .batch_keep import in_xla_context

CLIP_MODE_IDS = {name: i for i, name in enumerate(CLIP_MODES)}
GLOBAL, VALUE = CLIP_MODE_IDS["global_norm"], CLIP_MODE_IDS["value"]  # anything else: per-variable norm


def densify_sparse(mode: str, threshold: float | None) -> bool:
    """Whether Keras, clipping with this setting, hands the optimizer a sparse gradient as a dense tensor."""
    return threshold is not None and threshold > 0 and CLIP_MODE_IDS[mode] == GLOBAL


def _values(g: Any) -> tf.Tensor:
    """The dense values of a gradient (IndexedSlices carry theirs in ``.values``)."""
    return g.values if isinstance(g, tf.IndexedSlices) else g


def map_values(g: Any, fn: Callable[[tf.Tensor], tf.Tensor]) -> Any:
    """``fn`` applied to a gradient's values, keeping its kind."""
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(fn(g.values), g.indices, g.dense_shape)
    return fn(g)


def summed_rows(g: tf.IndexedSlices) -> tf.Tensor:
    """The rows of ``g`` with repeated ids summed: the nonzero rows of the gradient the optimizer applies.

    As many rows as ``g`` has (static shapes), the ones past the distinct ids zero;
    rows are summed in their original order, as ``tf.convert_to_tensor(g)`` sums them.
    """
    n = tf.shape(g.indices, out_type=tf.int32)[0]
    segment = tf.unique(g.indices, out_idx=tf.int32).idx  # numbers the distinct ids 0, 1, ...; XLA compiles it
    return tf.math.unsorted_segment_sum(g.values, segment, n)


def exact(g: Any) -> Any:
    """What the statistics measure: a dense gradient itself, a sparse one's ``summed_rows``."""
    return summed_rows(g) if isinstance(g, tf.IndexedSlices) else g


def dense_size(g: Any) -> tf.Tensor:
    """Elements of the dense gradient, as float32 (of the whole table for a sparse one)."""
    if isinstance(g, tf.IndexedSlices):
        return tf.cast(tf.reduce_prod(g.dense_shape), tf.float32)
    return tf.cast(tf.size(g), tf.float32)


def sq_norms(grads: Sequence[Any]) -> tf.Tensor:
    """Squared L2 norm per gradient (0 for ``None``): one fused kernel each.

    Give it ``exact`` gradients: a sparse one's values as given would miss its repeated ids' sums.
    """
    zero = tf.constant(0.0, tf.float32)
    halves = [zero if g is None else tf.nn.l2_loss(tf.cast(_values(g), tf.float32)) for g in grads]
    return 2.0 * tf.stack(halves) if halves else tf.zeros([0])


def flat_values(grads: Sequence[Any]) -> tf.Tensor:
    """All gradients' values as one float32 vector (a copy: only for rarely taken branches)."""
    if not grads:
        return tf.zeros([0])
    return tf.concat([tf.reshape(tf.cast(_values(g), tf.float32), [-1]) for g in grads], 0)


def count(grads: Sequence[Any], present: Sequence[int], n: int, pred: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Per variable (``n`` of them), how many elements of its (``exact``) gradient satisfy ``pred``.

    One vector op and a segment sum, not a few ops per variable, when the sizes are static.
    """
    sizes = [_values(g).shape.num_elements() for g in grads]
    if None not in sizes:
        owner = tf.constant(np.repeat(np.asarray(present, np.int32), np.asarray(sizes, np.int64)), tf.int32)
        return tf.math.unsorted_segment_sum(tf.cast(pred(flat_values(grads)), tf.float32), owner, n)
    per_var = [tf.reduce_sum(tf.cast(pred(_values(g)), tf.float32)) for g in grads]
    return tf.scatter_nd([[i] for i in present], tf.stack(per_var), [n])


def _keras_sq(g: tf.IndexedSlices, densify: bool) -> tf.Tensor:
    """The squared norm Keras clips a sparse gradient by: of its values as given, repeated ids not summed.

    ``clip_by_global_norm`` (``densify``) sums them over the densified squares, ``tf.clip_by_norm`` over
    the values; the same number, summed in another order, so a bit apart.
    """
    squares = tf.square(g.values)
    if densify:
        return tf.reduce_sum(tf.convert_to_tensor(tf.IndexedSlices(squares, g.indices, g.dense_shape)))
    return tf.reduce_sum(squares)


def clip_gradients(
    grads: list[Any], sq: tf.Tensor, mode: tf.Tensor, threshold: tf.Tensor, densify: bool = False
) -> tuple[list[Any], tf.Tensor, tf.Tensor]:
    """Clip ``grads`` (none of them ``None``) as Keras would with this mode and ``threshold`` (float64).

    ``sq`` holds the squared norms of the gradients as applied (``exact``). Returns
    the clipped gradients, the clip scale (post-clip global norm over the pre-clip
    one) and, in value mode, the fraction of elements bounded (0 otherwise). A
    threshold <= 0 clips nothing. ``densify``: sparse gradients leave as dense
    tensors (Keras' global-norm clipping), in either branch. The scale and fraction
    of the untaken branch are constants, so a row that records them need not wait for the norms.
    """
    total = tf.reduce_sum(sq)
    t = tf.cast(threshold, tf.float32)  # as Keras converts the Python float it holds
    sparse = [isinstance(g, tf.IndexedSlices) for g in grads]

    def kind(g: Any) -> Any:
        return tf.convert_to_tensor(g) if densify and isinstance(g, tf.IndexedSlices) else g

    def passthrough() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        return [map_values(kind(g), tf.identity) for g in grads], tf.constant(1.0), tf.constant(0.0)

    def clip() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        on = t > 0  # always true inside the branch; without it (XLA) a threshold <= 0 leaves grads as they are
        value = (mode == VALUE) & on
        by_norm = (mode != GLOBAL) & ~value & on
        # Keras measures a sparse gradient by its values as given (repeated ids not summed) to clip it.
        keras_sq = (
            tf.stack([_keras_sq(g, densify) if s else sq[i] for i, (g, s) in enumerate(zip(grads, sparse))])
            if grads
            else sq
        )
        # clip_by_global_norm, with 1/t in double precision as Python computes it from Keras' float.
        norm = tf.sqrt(tf.reduce_sum(keras_sq))
        inverse_t = tf.cast(1.0 / tf.where(threshold > 0, threshold, 1.0), tf.float32)
        global_scale = t * tf.minimum(1.0 / norm, inverse_t) + (norm - norm)
        # tf.clip_by_norm.
        values_norm = tf.where(keras_sq > 0, tf.sqrt(tf.where(keras_sq > 0, keras_sq, 1.0)), keras_sq)
        numerator = tf.where(by_norm, t, tf.where((mode == GLOBAL) & on, global_scale, 1.0))
        denominator = tf.where(by_norm, tf.maximum(values_norm, t), tf.ones_like(values_norm))
        bound = tf.where(value, t, np.inf)
        numerators = tf.unstack(tf.broadcast_to(numerator, tf.shape(denominator)), num=len(grads)) if grads else []
        denominators = tf.unstack(denominator, num=len(grads)) if grads else []
        limits: dict[tf.DType, tuple[tf.Tensor, tf.Tensor]] = {}  # (low, high) once per dtype, not per variable

        def limit(dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
            if dtype not in limits:
                high = tf.cast(bound, dtype)
                limits[dtype] = (-high, high)
            return limits[dtype]

        def scale_and_bound(v: tf.Tensor, num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
            # One expression for every mode: a factor of 1, a division by 1 and a bound of inf are exact.
            return tf.clip_by_value(v * tf.cast(num, v.dtype) / tf.cast(den, v.dtype), *limit(v.dtype))

        out = [
            map_values(kind(g), functools.partial(scale_and_bound, num=num, den=den))
            for g, num, den in zip(grads, numerators, denominators)
        ]
        scales = numerator / denominator

        def bounded() -> tuple[tf.Tensor, tf.Tensor]:
            over = tf.reduce_sum(tf.cast(tf.abs(flat_values(grads)) > t, tf.float32))
            post = tf.reduce_sum(sq_norms([exact(o) for o in out]))
            size = tf.add_n([dense_size(g) for g in grads]) if grads else tf.constant(0.0)
            return post, over / tf.maximum(size, 1.0)

        def scaled() -> tuple[tf.Tensor, tf.Tensor]:  # exactly ``total`` when no scale bites
            return tf.where(tf.reduce_all(scales >= 1.0), total, tf.reduce_sum(sq * tf.square(scales))), tf.constant(
                0.0
            )

        post, frac = tf.cond(value, bounded, scaled)
        return out, tf.where(total > 0, tf.sqrt(post / tf.maximum(total, 1e-30)), 1.0), frac

    if in_xla_context():
        # XLA copies every tensor a conditional returns (here every gradient, each step) and cannot fuse
        # across it; without the branch the scale and bound fuse into the optimizer's own update.
        return clip()
    clipped: tuple[list[Any], tf.Tensor, tf.Tensor] = tf.cond(t > 0, clip, passthrough)
    return clipped
