"""Gradient clipping under a live setting, inside the compiled step.

``clip_gradients`` clips by global norm, per-variable norm or value, with mode
and threshold given as tensors (read from ``tf.Variable``s by the caller), so a
change from the dashboard applies on the next step without retracing.

Every op per variable costs about a microsecond on a CPU step, whether it runs
or sits in a branch not taken, so the per-variable part is kept to a couple of
ops: one branch point taken only while a threshold is set, in it one scale and
one bound per gradient (the norm modes scale, value mode bounds).
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


def _values(g: Any) -> tf.Tensor:
    """The dense values of a gradient (IndexedSlices carry theirs in ``.values``)."""
    return g.values if isinstance(g, tf.IndexedSlices) else g


def _map_values(g: Any, fn: Callable[[tf.Tensor], tf.Tensor]) -> Any:
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(fn(g.values), g.indices, g.dense_shape)
    return fn(g)


def sq_norms(grads: Sequence[Any]) -> tf.Tensor:
    """Squared L2 norm per gradient (0 for ``None``): one fused kernel each."""
    zero = tf.constant(0.0, tf.float32)
    halves = [zero if g is None else tf.nn.l2_loss(tf.cast(_values(g), tf.float32)) for g in grads]
    return 2.0 * tf.stack(halves) if halves else tf.zeros([0])


def flat_values(grads: Sequence[Any]) -> tf.Tensor:
    """All gradients' values as one float32 vector (a copy: only for rarely taken branches)."""
    if not grads:
        return tf.zeros([0])
    return tf.concat([tf.reshape(tf.cast(_values(g), tf.float32), [-1]) for g in grads], 0)


def count(grads: Sequence[Any], present: Sequence[int], n: int, pred: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Per variable (``n`` of them), how many elements of its gradient satisfy ``pred``.

    One vector op and a segment sum, not a few ops per variable, when the sizes are static.
    """
    sizes = [_values(g).shape.num_elements() for g in grads]
    if None not in sizes:
        owner = tf.constant(np.repeat(np.asarray(present, np.int32), np.asarray(sizes, np.int64)), tf.int32)
        return tf.math.unsorted_segment_sum(tf.cast(pred(flat_values(grads)), tf.float32), owner, n)
    per_var = [tf.reduce_sum(tf.cast(pred(_values(g)), tf.float32)) for g in grads]
    return tf.scatter_nd([[i] for i in present], tf.stack(per_var), [n])


def clip_gradients(
    grads: list[Any], sq: tf.Tensor, total: tf.Tensor, mode: tf.Tensor, t: tf.Tensor
) -> tuple[list[Any], tf.Tensor, tf.Tensor]:
    """Clip ``grads`` (none of them ``None``; ``sq`` holds their squared norms, ``total`` the sum).

    Returns the clipped gradients, the clip scale (post-clip global norm over the
    pre-clip one) and, in value mode, the fraction of elements bounded (0 otherwise).
    A threshold <= 0 clips nothing. The scale and fraction of the untaken branch are
    constants, so a row that records them need not wait for the norms.
    """

    def passthrough() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        return [tf.identity(g) for g in grads], tf.constant(1.0), tf.constant(0.0)

    def clip() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        on = t > 0  # always true inside the branch; without it (XLA) a threshold <= 0 leaves grads as they are
        value = (mode == VALUE) & on
        per_var = tf.minimum(1.0, t / tf.maximum(tf.sqrt(sq), 1e-30))
        global_s = tf.minimum(1.0, t / tf.maximum(tf.sqrt(total), 1e-30))
        s = tf.where(value | ~on, 1.0, tf.where(mode == GLOBAL, global_s, per_var))
        bound = tf.where(value, t, np.inf)
        scales = tf.unstack(s, num=len(grads)) if grads else []
        limits: dict[tf.DType, tuple[tf.Tensor, tf.Tensor]] = {}  # (low, high) once per dtype, not per variable

        def limit(dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
            if dtype not in limits:
                high = tf.cast(bound, dtype)
                limits[dtype] = (-high, high)
            return limits[dtype]

        def scale_and_bound(v: tf.Tensor, si: tf.Tensor) -> tf.Tensor:
            return tf.clip_by_value(v * tf.cast(si, v.dtype), *limit(v.dtype))

        out = [_map_values(g, functools.partial(scale_and_bound, si=si)) for g, si in zip(grads, scales)]

        def bounded() -> tuple[tf.Tensor, tf.Tensor]:
            values = flat_values(grads)
            over = tf.reduce_sum(tf.cast(tf.abs(values) > t, tf.float32))
            post = tf.reduce_sum(tf.square(tf.minimum(tf.abs(values), t)))
            return post, over / tf.maximum(tf.cast(tf.size(values), tf.float32), 1.0)

        def scaled() -> tuple[tf.Tensor, tf.Tensor]:  # exactly ``total`` when no scale bites
            return tf.where(tf.reduce_all(s >= 1.0), total, tf.reduce_sum(sq * tf.square(s))), tf.constant(0.0)

        post, frac = tf.cond(value, bounded, scaled)
        return out, tf.where(total > 0, tf.sqrt(post / tf.maximum(total, 1e-30)), 1.0), frac

    if in_xla_context():
        # XLA copies every tensor a conditional returns (here every gradient, each step) and cannot fuse
        # across it; without the branch the scale and bound fuse into the optimizer's own update.
        return clip()
    clipped: tuple[list[Any], tf.Tensor, tf.Tensor] = tf.cond(t > 0, clip, passthrough)
    return clipped
