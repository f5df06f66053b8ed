"""In-graph gradient statistics, around the live-controlled clipping of ``clipping.py``.

``GradientStats.process`` runs inside the compiled train step on the gradients
the optimizer is about to apply. It clips them under a mode and threshold held
in ``tf.Variable``s (so a change applies on the next step without retracing) and
writes the step's raw statistics into one row of a small ``tf.Variable`` ring
buffer. The host reads that buffer in one transfer and derives the rest
(``ring_layout.Layout.unpack``): norms, the global norm, the clip scale and flags.

Cost control, because this is on the hot path of every step: on a CPU every op
costs about a microsecond per variable, run or not (an untaken branch still
passes its dead tensors through), so the step keeps to:
- one fused ``l2_loss`` kernel per variable;
- one branch point for clipping, taken only while a threshold is set;
- one branch point for a non-finite step: NaN/Inf counts per variable (one
  segment sum over all of them); healthy steps pay nothing more;
- one branch point that keeps the batch of a non-finite step for the host to
  replay (origin.py), and without ``probe_data`` that of the steps the activation
  probe is due (batch_keep.py);
- the weight scan after a bad step and the BatchNorm moving statistics are the
  host's (session.py, bn_stats.py): reading variables in the step would also
  hold every weight update back until the whole backward pass had finished;
- the update-to-weight ratio, two ``l2_loss`` kernels per variable around the
  optimizer's own update (update_capture.py), written into the row after it
  (``record_updates``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradwatch.protocol import check_clip_mode

from .batch_keep import in_xla_context
from .bn_stats import BatchNormSampler
from .clipping import CLIP_MODE_IDS, clip_gradients, count, densify_sparse, exact, sq_norms
from .origin import OriginFinder, count_nonfinite
from .readback import host_array
from .ring_layout import SCALARS as SCALARS  # re-exported: session.py, multi_optimizer.py
from .ring_layout import VECTORS
from .ring_layout import Layout as Layout


def _joined(values: Sequence[Any]) -> list[Any]:
    """Row values in column order as few tensors as possible: each run of constants (floats, numpy arrays) one
    constant, each run of scalar tensors one stack (every op costs on the hot path: see the module's docstring)."""

    def kind(v: Any) -> str:
        if isinstance(v, (float, np.ndarray)):
            return "constant"
        return "scalar" if v.shape.rank == 0 else "vector"

    out: list[Any] = []
    for k, run in itertools.groupby(values, kind):
        items = list(run)
        if k == "constant":
            out.append(tf.constant(np.concatenate([np.atleast_1d(np.asarray(v, np.float32)) for v in items])))
        elif k == "scalar":
            out.append(tf.stack(items))
        else:
            out += items
    return out


def monitor_variable(initial: Any, dtype: Any, name: str) -> tf.Variable:
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
        step: tf.Variable | None = None,
        update_ratio: bool = True,
    ) -> None:
        check_clip_mode(clip_mode)
        self.variables = list(variables)
        self.bn_layers = list(bn_layers)
        self.layout = Layout(len(self.variables))
        self.ring = max(1, int(ring))
        self.loss_recorded = False  # set while tracing: does the step know its loss?
        self.inputs_given = True  # set while tracing: did the step see its batch (x, y)?
        self.traces = 0  # how many times ``process`` was traced; a retrace would show here
        self.clip_mode = monitor_variable(CLIP_MODE_IDS[clip_mode], tf.int32, "gw_clip_mode")
        # A threshold <= 0 means "measure, clip nothing". Double precision: Keras derives 1/threshold from
        # the Python float it holds, and the clipping repeats that arithmetic (clipping.py).
        self.clip_threshold = monitor_variable(float(clip_threshold or 0.0), tf.float64, "gw_clip_threshold")
        self.setting = (clip_mode, clip_threshold)  # the host's latest: a trace decides sparse kinds by it
        self.buffer = monitor_variable(
            tf.fill([self.ring, self.layout.width], tf.constant(-1.0, tf.float64)), None, "gw_stats"
        )
        # Our own step counter: the optimizer's does not advance on a step its
        # loss scaler skips, and every attempted step deserves its own report.
        # ``step`` given: a counter shared with other optimizers' statistics, advanced by its owner
        # once per train step (multi_optimizer.py), not here on every update.
        self._owns_step = step is None
        self.step = monitor_variable(first_step, tf.int64, "gw_step") if step is None else step
        self.bn = BatchNormSampler(self.bn_layers)
        #: Measure the update-to-weight ratio in the step (False: the host does, or nobody).
        self.update_ratio = update_ratio
        #: Set while tracing: the traced step writes the ratio of at least one variable.
        self.updates_in_graph = False

    # ------------------------------------------------------------------ host side

    def set_clip(self, mode: str, threshold: float | None) -> None:
        """Change clipping from the host; the next step uses it, no retrace."""
        self.clip_mode.assign(CLIP_MODE_IDS[check_clip_mode(mode, "mode")])
        self.clip_threshold.assign(float(threshold or 0.0))
        self.setting = (mode, threshold)

    def read(self) -> np.ndarray:
        """The whole ring buffer (``ring`` × ``layout.width``), one host transfer."""
        return np.asarray(self.buffer.value().numpy())  # value(): one op; numpy() would add a copy op

    def count_weight_nonfinite(self) -> int:
        """Non-finite elements in all weights, read on the host (only after a bad step)."""
        return int(sum(np.count_nonzero(~np.isfinite(host_array(v))) for v in self.variables))

    # ------------------------------------------------------------------ graph side

    def process(
        self,
        grads: Sequence[Any],
        lr: Any,
        loss: Any = None,
        inputs: tuple[Any, Any] | None = None,
        origin: OriginFinder | None = None,
        clip: bool = True,
    ) -> tuple[list[Any], tf.Tensor, tf.Tensor]:
        """Clip ``grads`` under the live setting and record the step's statistics.

        Returns the clipped gradients, whether the step is healthy (finite
        gradient norm and loss) and the step's number. A step with no known ``loss`` records NaN there
        and judges health by the gradients alone. ``inputs`` (x, y), if given, are
        checked on unhealthy steps, and their features kept by ``origin`` (see ``OriginFinder.keep``).
        ``clip=False``: measure only (gradient accumulation clips the averaged gradient, ``clip_applied``).
        A sparse gradient is measured with its repeated ids summed, and reaches the
        optimizer as the kind Keras would hand it under the clipping in force at trace time.
        """
        self.traces += 1
        step = self.step.read_value()
        grads = list(grads)
        exact_grads = [None if g is None else exact(g) for g in grads]
        n = len(grads)
        present = [i for i, g in enumerate(grads) if g is not None]
        sq = sq_norms(exact_grads)
        total = tf.reduce_sum(sq)
        known_loss = loss is not None
        self.loss_recorded = known_loss
        self.inputs_given = inputs is not None
        loss = tf.cast(tf.reduce_mean(loss), tf.float32) if known_loss else tf.constant(np.nan, tf.float32)
        healthy = tf.math.is_finite(total)
        if known_loss:
            healthy = healthy & tf.math.is_finite(loss)

        mode = self.clip_mode.read_value()
        threshold = self.clip_threshold.read_value()
        t = tf.cast(threshold, tf.float32)
        # tf.cond cannot carry None: clip the present gradients, then put the gaps back.
        present_sq = sq if len(present) == n else tf.gather(sq, present)
        if clip:
            clipped, scale, frac = clip_gradients(
                [grads[i] for i in present], present_sq, mode, threshold, densify_sparse(*self.setting)
            )
        else:
            clipped, scale, frac = [grads[i] for i in present], tf.constant(1.0), tf.constant(0.0)
        clipped_grads: list[Any] = [None] * n
        for i, g in zip(present, clipped):
            clipped_grads[i] = g

        def troubled() -> tf.Tensor:
            """unhealthy, features, labels, then NaN and Inf counts per variable: a non-finite step only."""
            bad = [exact_grads[i] for i in present]
            found = [tf.constant(0.0), tf.constant(0.0)]
            if inputs is not None:
                x, y = inputs
                found = [count_nonfinite(x), count_nonfinite(y)]
            nan_c, inf_c = count(bad, present, n, tf.math.is_nan), count(bad, present, n, tf.math.is_inf)
            return tf.cast(tf.concat([tf.stack([tf.constant(1.0), *found]), nan_c, inf_c], 0), tf.float64)

        if inputs is not None and origin is not None:
            origin.keep(inputs[0], step, healthy)  # for the replay of a non-finite step, and for the probe

        nan_at, inf_at = self.layout.offset("grad_nan"), self.layout.offset("grad_inf")
        trouble_cols = [SCALARS.index(k) for k in ("unhealthy", "origin_features", "origin_labels")]
        trouble_cols += [*range(nan_at, nan_at + n), *range(inf_at, inf_at + n)]
        row = tf.math.floormod(step, self.ring)
        # The row of a healthy step. Its inputs are ready early except ``sq``: after the
        # last gradient only a few ops remain, which is what the step's wall time sees.
        measured = {
            "loss": loss,
            "lr": tf.cast(lr, tf.float32),
            "clip_mode": tf.cast(mode, tf.float32),
            "clip_threshold": t,
            "clip_scale": scale,
            "clipped_fraction": frac,
            "micro_step": 0.0 if clip else 1.0,  # see clip_applied
            "accumulated_norm": float("nan"),
            "grad_norm": sq,
            "update_ratio": np.full(n, np.nan),
        }
        if unknown := set(measured) - {*SCALARS, *VECTORS}:
            raise TypeError(f"the statistics ring has no column {sorted(unknown)}")  # a renamed step field
        zero = np.zeros(n)
        head = [measured.get(k, 0.0) for k in SCALARS[1:]]  # the rest (counts, flags) start at 0
        values = tf.cast(tf.concat(_joined([*head, *(measured.get(k, zero) for k in VECTORS)]), 0), tf.float64)
        values = tf.concat([tf.reshape(tf.cast(step, tf.float64), [1]), values], 0)
        if tf.distribute.has_strategy() or in_xla_context():
            # A mirrored buffer may not be written inside a branch: fold the branch's values in. XLA
            # would compile ``buffer[row]`` with the row as a constant: one compile per step.
            trouble = tf.cond(healthy, lambda: tf.zeros([len(trouble_cols)], tf.float64), troubled)
            values = tf.tensor_scatter_nd_update(values, [[c] for c in trouble_cols], trouble)
            self._write(tf.reshape(row, [1, 1]), values[None])
        else:
            self.buffer[row].assign(values)  # in place: one op, no copy of the buffer

            def write_trouble() -> tf.Tensor:  # into the row just written
                index = tf.stack([tf.fill([len(trouble_cols)], row), tf.constant(trouble_cols, tf.int64)], axis=1)
                self._write(index, troubled())
                return tf.constant(True)

            tf.cond(healthy, lambda: tf.constant(False), write_trouble)
        if self._owns_step:
            self.step.assign_add(1)
        return clipped_grads, healthy, step

    def record_loss(self, step: Any, loss: tf.Tensor) -> None:
        """After the train step (traced): the step's own loss, when ``process`` was given none."""
        row = tf.math.floormod(tf.cast(step, tf.int64), self.ring)
        index = tf.stack([row, tf.constant(SCALARS.index("loss"), tf.int64)])[None]
        self._write(index, tf.reshape(tf.cast(loss, tf.float64), [1]))
        self.loss_recorded = True

    def clip_applied(self, grads: list[Any], step: Any) -> list[Any]:
        """Gradient accumulation: clip the averaged gradient of an update step, where Keras clips it.

        Called from the optimizer's ``_clip_gradients`` (optimizer_hook.py), after ``process``
        measured step ``step``'s micro-batch with ``clip=False``. Writes into that step's
        row: an update step, the averaged gradient's global norm, the clip scale and fraction.
        """
        present = [i for i, g in enumerate(grads) if g is not None]
        sq = sq_norms([exact(grads[i]) for i in present])
        threshold = self.clip_threshold.read_value()
        clipped, scale, frac = clip_gradients(
            [grads[i] for i in present], sq, self.clip_mode.read_value(), threshold, densify_sparse(*self.setting)
        )
        out = list(grads)
        for i, g in zip(present, clipped):
            out[i] = g
        cols = [SCALARS.index(k) for k in ("clip_scale", "clipped_fraction", "micro_step", "accumulated_norm")]
        row = tf.math.floormod(tf.cast(step, tf.int64), self.ring)
        index = tf.stack([tf.fill([len(cols)], row), tf.constant(cols, tf.int64)], axis=1)
        values = tf.stack([scale, frac, tf.constant(0.0), tf.sqrt(tf.reduce_sum(sq))])
        self._write(index, tf.cast(values, tf.float64))
        return out

    def record_skipped(self, step: Any, skipped: tf.Tensor) -> None:
        """After the optimizer ran (or did not): whether the step's update was skipped."""
        row = tf.math.floormod(tf.cast(step, tf.int64), self.ring)
        index = tf.stack([row, tf.constant(SCALARS.index("skipped"), tf.int64)])[None]
        self._write(index, tf.reshape(tf.cast(skipped, tf.float64), [1]))

    def record_updates(self, step: Any, ratios: tf.Tensor) -> None:
        """After the optimizer's update: its ‖Δw‖ / ‖w‖ per variable into the step's row."""
        self.updates_in_graph = True
        n, offset = self.layout.n_vars, self.layout.update_ratio_offset
        row = tf.math.floormod(tf.cast(step, tf.int64), self.ring)
        if tf.distribute.has_strategy() or in_xla_context():
            cols = tf.range(offset, offset + n, dtype=tf.int64)
            self._write(tf.stack([tf.fill([n], row), cols], axis=1), ratios)
        else:
            self.buffer[row, offset : offset + n].assign(ratios)  # in place

    def _write(self, index: tf.Tensor, values: tf.Tensor) -> None:
        # A whole-variable assign, not a scatter: under a distribution strategy the
        # variable is mirrored, and only plain assignment is defined there.
        self.buffer.assign(tf.tensor_scatter_nd_update(self.buffer.read_value(), index, values))
