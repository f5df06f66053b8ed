"""Gradient clipping under a live setting, inside the compiled step.

``clip_gradients`` clips by global norm, per-variable norm or value, with mode
and threshold given as tensors (read from ``tf.Variable``s by the caller), so a
change from the dashboard applies on the next step without retracing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from gradwatch.protocol import CLIP_MODES

CLIP_MODE_IDS = {name: i for i, name in enumerate(CLIP_MODES)}
GLOBAL, VALUE = CLIP_MODE_IDS["global_norm"], CLIP_MODE_IDS["value"]  # anything else: per-variable norm


def _values(g: Any) -> tf.Tensor:
    """The dense values of a gradient (IndexedSlices carry theirs in ``.values``)."""
    return g.values if isinstance(g, tf.IndexedSlices) else g


def _scale(g: Any, s: tf.Tensor) -> Any:
    if g is None:
        return None
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * tf.cast(s, g.values.dtype), g.indices, g.dense_shape)
    return g * tf.cast(s, g.dtype)


def _clip_value(g: Any, t: tf.Tensor) -> Any:
    if g is None:
        return None
    if isinstance(g, tf.IndexedSlices):
        v = g.values
        return tf.IndexedSlices(
            tf.clip_by_value(v, -tf.cast(t, v.dtype), tf.cast(t, v.dtype)), g.indices, g.dense_shape
        )
    return tf.clip_by_value(g, -tf.cast(t, g.dtype), tf.cast(t, g.dtype))


def sq_norms(grads: Sequence[Any]) -> tf.Tensor:
    zero = tf.constant(0.0, tf.float32)
    return tf.stack([zero if g is None else 2.0 * tf.nn.l2_loss(tf.cast(_values(g), tf.float32)) for g in grads])


def count(grads: Sequence[Any], pred: Any) -> tf.Tensor:
    zero = tf.constant(0.0, tf.float32)
    return tf.stack([zero if g is None else tf.reduce_sum(tf.cast(pred(_values(g)), tf.float32)) for g in grads])


def clip_gradients(
    grads: list[Any],
    present: list[int],
    sq: tf.Tensor,
    norms: tf.Tensor,
    gnorm: tf.Tensor,
    mode: tf.Tensor,
    t: tf.Tensor,
) -> tuple[list[Any], tf.Tensor, tf.Tensor]:
    """Clip the present (non-None) ``grads``; ``sq``/``norms`` cover all variables."""

    def by_value() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        out = [_clip_value(g, t) for g in grads]
        over = tf.reduce_sum(count(grads, lambda v: tf.abs(v) > tf.cast(t, v.dtype)))
        size = tf.add_n([tf.size(_values(g), out_type=tf.float32) for g in grads]) if grads else 1.0
        post = tf.tensor_scatter_nd_update(sq, [[i] for i in present], sq_norms(out)) if present else sq
        return out, post, over / tf.maximum(size, 1.0)

    def by_scale() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        per_var = tf.minimum(1.0, t / tf.maximum(norms, 1e-30))
        global_s = tf.minimum(1.0, t / tf.maximum(gnorm, 1e-30))
        s = tf.where(mode == GLOBAL, tf.fill(tf.shape(norms), global_s), per_var)
        # Scaling every gradient costs a pass over them: only pay it when a scale bites.
        s_present = [s[i] for i in present]
        out = tf.cond(
            tf.reduce_any(s < 1.0),
            lambda: [_scale(g, si) for g, si in zip(grads, s_present)],
            lambda: [tf.identity(g) for g in grads],
        )
        return out, sq * tf.square(s), tf.constant(0.0)

    def no_clip() -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        return [tf.identity(g) for g in grads], sq, tf.constant(0.0)

    return tf.case(
        [(t <= 0, no_clip), (mode == VALUE, by_value)],
        default=by_scale,
        exclusive=False,
    )
