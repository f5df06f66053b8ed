"""In-graph gradient statistics, around the live-controlled clipping of ``clipping.py``.

``GradientStats.process`` runs inside the compiled train step on the gradients
the optimizer is about to apply. It clips them under a mode and threshold held
in ``tf.Variable``s (so a change applies on the next step without retracing) and
writes every statistic of the step into one row of a small ``tf.Variable``
ring buffer. The host reads that buffer once per reported step: one transfer.

Cost control, because this is on the hot path of every step:
- per-variable norms use one fused ``l2_loss`` kernel per variable;
- NaN/Inf element counts are only computed when the global norm (or the loss)
  is not finite, so healthy steps pay nothing for them;
- weights are only scanned for NaN/Inf after a non-finite step, until found
  clean: with finite gradients and finite weights an update cannot make them
  non-finite (short of float overflow, which shows up as an infinite norm);
- BatchNorm statistics of all layers cost a handful of segment ops (bn_stats.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from gradwatch.protocol import BN_FIELDS, CLIP_MODES

from .bn_stats import BatchNormStats
from .clipping import CLIP_MODE_IDS, VALUE, clip_gradients, count, sq_norms

#: Scalars at the start of every buffer row, in this order.
SCALARS: tuple[str, ...] = (
    "step",
    "loss",
    "lr",
    "global_norm",
    "clip_mode",
    "clip_threshold",
    "clip_scale",
    "clipped",
    "clipped_fraction",
    "weight_nonfinite",
    "loss_nonfinite",
    "skipped",
    "origin_features",  # non-finite elements in the step's input features (non-finite steps only)
    "origin_labels",  # ... in its labels
    "origin_layer",  # index of the first layer whose forward output is non-finite, -1 if none / unknown
)


@dataclass(frozen=True)
class Layout:
    """Where each statistic sits in a buffer row."""

    n_vars: int
    n_bn: int

    @property
    def width(self) -> int:
        return len(SCALARS) + 4 * self.n_vars + len(BN_FIELDS) * self.n_bn

    @property
    def update_ratio_offset(self) -> int:
        return len(SCALARS) + 3 * self.n_vars

    def unpack(self, row: np.ndarray) -> dict[str, Any]:
        """Split one host-side row into named scalars and vectors."""
        s = len(SCALARS)
        n = self.n_vars
        out: dict[str, Any] = {name: float(row[i]) for i, name in enumerate(SCALARS)}
        out["grad_norm"] = row[s : s + n]
        out["grad_nan"] = row[s + n : s + 2 * n]
        out["grad_inf"] = row[s + 2 * n : s + 3 * n]
        out["update_ratio"] = row[s + 3 * n : s + 4 * n]
        out["bn"] = row[s + 4 * n :].reshape(self.n_bn, len(BN_FIELDS))
        return out


def _variable(initial: Any, dtype: Any, name: str) -> tf.Variable:
    """A monitor variable; under a distribution strategy every replica holds the first replica's value."""
    return tf.Variable(
        initial,
        dtype=dtype,
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_WRITE,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


class GradientStats:
    """Holds the control variables and the stats buffer; ``process`` is traced into the step.

    Build it eagerly: outside any ``tf.function``, or under ``tf.init_scope()``.
    """

    def __init__(
        self,
        variables: Sequence[Any],
        bn_layers: Sequence[Any] = (),
        clip_mode: str = "global_norm",
        clip_threshold: float | None = None,
        ring: int = 1,
        first_step: int = 0,
        report_every: int = 1,
    ) -> None:
        if clip_mode not in CLIP_MODE_IDS:
            raise ValueError(f"clip_mode={clip_mode!r} is not one of {CLIP_MODES}")
        self.variables = list(variables)
        self.bn_layers = list(bn_layers)
        self.layout = Layout(len(self.variables), len(self.bn_layers))
        self.ring = max(1, int(ring))
        self.loss_recorded = False  # set while tracing: does the step know its loss?
        self.traces = 0  # how many times ``process`` was traced; a retrace would show here
        self.clip_mode = _variable(CLIP_MODE_IDS[clip_mode], tf.int32, "gw_clip_mode")
        # A threshold <= 0 means "measure, clip nothing".
        self.clip_threshold = _variable(float(clip_threshold or 0.0), tf.float32, "gw_clip_threshold")
        self.buffer = _variable(
            tf.fill([self.ring, self.layout.width], tf.constant(-1.0, tf.float64)), None, "gw_stats"
        )
        self.weights_suspect = _variable(False, tf.bool, "gw_weights_suspect")
        # Our own step counter: the optimizer's does not advance on a step its
        # loss scaler skips, and every attempted step deserves its own report.
        self.step = _variable(first_step, tf.int64, "gw_step")
        self.bn = BatchNormStats(self.bn_layers, report_every, _variable)

    # ------------------------------------------------------------------ host side

    def set_clip(self, mode: str, threshold: float | None) -> None:
        """Change clipping from the host; the next step uses it, no retrace."""
        if mode not in CLIP_MODE_IDS:
            raise ValueError(f"clip mode {mode!r} is not one of {CLIP_MODES}")
        self.clip_mode.assign(CLIP_MODE_IDS[mode])
        self.clip_threshold.assign(float(threshold or 0.0))

    def read(self) -> np.ndarray:
        """The whole ring buffer (``ring`` × ``layout.width``), one host transfer."""
        return self.buffer.value().numpy()  # value(): one op; numpy() would add a copy op

    # ------------------------------------------------------------------ graph side

    def process(
        self,
        grads: Sequence[Any],
        lr: Any,
        loss: Any = None,
        origin: Callable[[], tuple[tf.Tensor, tf.Tensor, tf.Tensor]] | None = None,
    ) -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        """Clip ``grads`` under the live setting and record the step's statistics.

        Returns the clipped gradients, whether the step is healthy (finite
        gradient norm and loss) and the step's number. A step with no known ``loss`` records NaN there
        and judges health by the gradients alone. ``origin`` (features, labels,
        first bad layer) is only evaluated on unhealthy steps.
        """
        self.traces += 1
        step = self.step.read_value()
        grads = list(grads)
        sq = sq_norms(grads)
        norms = tf.sqrt(sq)
        gnorm = tf.sqrt(tf.reduce_sum(sq))
        known_loss = loss is not None
        self.loss_recorded = known_loss
        loss = tf.cast(tf.reduce_mean(loss), tf.float32) if known_loss else tf.constant(np.nan, tf.float32)
        loss_bad = tf.logical_not(tf.math.is_finite(loss)) if known_loss else tf.constant(False)
        healthy = tf.math.is_finite(gnorm) & ~loss_bad
        zeros = tf.zeros_like(norms)
        unknown = (tf.constant(0.0), tf.constant(0.0), tf.constant(-1.0))

        def calm() -> tuple[tf.Tensor, ...]:
            return zeros, zeros, tf.constant(0.0), *unknown

        def troubled() -> tuple[tf.Tensor, ...]:
            # Only after a non-finite step (or while the weights may still be poisoned).
            found = tf.cond(healthy, lambda: unknown, origin) if origin is not None else unknown
            counts = (count(grads, tf.math.is_nan), count(grads, tf.math.is_inf), self._count_weight_nonfinite())
            return *counts, *found

        # One branch point for everything healthy steps skip: cheaper than a tf.cond each.
        nan_c, inf_c, w_bad, *origin_stats = tf.cond(healthy & ~self.weights_suspect, calm, troubled)

        mode = self.clip_mode.read_value()
        t = self.clip_threshold.read_value()
        # tf.cond cannot carry None: clip the present gradients, then put the gaps back.
        present = [i for i, g in enumerate(grads) if g is not None]
        clipped, post_sq, frac = clip_gradients([grads[i] for i in present], present, sq, norms, gnorm, mode, t)
        clipped_grads: list[Any] = [None] * len(grads)
        for i, g in zip(present, clipped):
            clipped_grads[i] = g
        post_norm = tf.sqrt(tf.reduce_sum(post_sq))
        scale = tf.where(gnorm > 0, post_norm / tf.maximum(gnorm, 1e-30), 1.0)
        was_clipped = tf.cast((t > 0) & ((scale < 1.0) | (frac > 0)), tf.float32)

        self.weights_suspect.assign(~healthy | (w_bad > 0))

        scalars = tf.stack(
            [
                tf.constant(0.0),  # step: written below in float64 (float32 is exact only to 2**24)
                loss,
                tf.cast(lr, tf.float32),
                gnorm,
                tf.cast(mode, tf.float32),
                t,
                scale,
                was_clipped,
                tf.where(mode == VALUE, frac, tf.constant(np.nan, tf.float32)),
                w_bad,
                tf.cast(loss_bad, tf.float32),
                tf.constant(0.0),  # skipped: written by record_update
                *origin_stats,
            ]
        )
        parts = [tf.cast(scalars, tf.float64), tf.cast(norms, tf.float64), tf.cast(nan_c, tf.float64)]
        parts += [tf.cast(inf_c, tf.float64), tf.fill([self.layout.n_vars], tf.constant(np.nan, tf.float64))]
        if self.bn_layers:
            parts.append(tf.cast(tf.reshape(self.bn.summary(step), [-1]), tf.float64))
        row = tf.math.floormod(step, self.ring)
        values = tf.concat(parts, 0)
        values = tf.tensor_scatter_nd_update(values, [[0]], [tf.cast(step, tf.float64)])
        self._write(tf.reshape(row, [1, 1]), tf.expand_dims(values, 0))
        self.step.assign_add(1)
        return clipped_grads, healthy, step

    def record_update(self, step: Any, skipped: tf.Tensor, update_ratio: tf.Tensor | None) -> None:
        """After the optimizer ran: whether the step was skipped and, if measured, ‖Δw‖/‖w‖ per variable."""
        row = tf.math.floormod(tf.cast(step, tf.int64), self.ring)
        cols = [SCALARS.index("skipped")]
        values = [tf.reshape(tf.cast(skipped, tf.float64), [1])]
        if update_ratio is not None and self.layout.n_vars:
            cols += range(self.layout.update_ratio_offset, self.layout.update_ratio_offset + self.layout.n_vars)
            values.append(tf.cast(update_ratio, tf.float64))
        index = tf.stack([tf.fill([len(cols)], row), tf.constant(cols, tf.int64)], axis=1)
        self._write(index, tf.concat(values, 0))

    def _write(self, index: tf.Tensor, values: tf.Tensor) -> None:
        # A whole-variable assign, not a scatter: under a distribution strategy the
        # variable is mirrored, and only plain assignment is defined there.
        self.buffer.assign(tf.tensor_scatter_nd_update(self.buffer.read_value(), index, values))

    def _count_weight_nonfinite(self) -> tf.Tensor:
        return tf.reduce_sum(count(self.variables, lambda v: ~tf.math.is_finite(v)))
