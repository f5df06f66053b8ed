"""Where a non-finite step came from: the input features, the labels, or the first layer.

Nothing here runs on a healthy step. On a non-finite one the train step (inside
the branch only such steps take) counts non-finite features and labels and
keeps a copy of the batch's features (batch_keep.py: one variable per input, which
XLA can compile, unlike a serialised ``tf.string``); the host then replays that
one batch layer by layer, once, in inference mode, to find the first layer
whose output is not finite. Keeping the replay out of the compiled step matters:
a forward pass sitting in an untaken branch still costs every healthy step.

The replay uses the trainable weights from before the step's update: the same
branch copies them (``PreStepWeights``), so an update that wrote NaN into them
does not hide where the NaN came from. Where that copy is not kept (under XLA or a
distribution strategy, or weights past ``PRE_STEP_BUDGET_BYTES``) the replay uses the
weights as the host finds them, which are the step's own when ``guard_nonfinite``
skipped its update; otherwise the session says the weights are poisoned instead of
naming a layer. Layer-by-layer replay needs a Sequential or functional model; for
subclassed models only features and labels are checked. Every text says whether the
batch was replayed: "not replayed" (and why) is never worded as "replayed, all finite".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .batch_keep import KeptBatch, in_xla_context, input_spec

#: Largest total size of trainable weights copied on a non-finite step for its replay (a second copy
#: of them lives in memory for the whole run).
PRE_STEP_BUDGET_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Replay:
    """What replaying a non-finite step's batch found.

    ``replayed`` with ``layer`` None: every layer's output was finite. Not ``replayed``:
    ``why_not`` says why, or is None when only the weights stood in the way (already poisoned).
    """

    replayed: bool = False
    layer: str | None = None
    why_not: str | None = None


def explain_nonfinite(
    u: dict[str, Any], loss_recorded: bool, replay: Callable[[bool], Replay], inputs_given: bool = True
) -> tuple[str, str | None, str]:
    """``(source, layer, detail)`` of a non-finite step, from its unpacked statistics row ``u``.

    ``replay(current_weights_ok)`` replays the batch; it is called only when the inputs are clean,
    told whether the weights as they are now may stand in for the step's (not when its update
    already wrote non-finite ones).
    """
    poisoned = int(u["weight_nonfinite"])
    if not inputs_given:
        return (
            "unknown",
            None,
            "this loop passed no inputs= to apply_gradients, so the batch's features and "
            "labels were neither checked nor replayed; pass inputs=(x, y) to find where a non-finite step starts",
        )
    if u["origin_features"] > 0:
        return "features", None, f"{int(u['origin_features'])} non-finite values in this batch's input features"
    if u["origin_labels"] > 0:
        return "labels", None, f"{int(u['origin_labels'])} non-finite values in this batch's labels"
    found = replay(not (poisoned and not u["skipped"]))
    if found.layer is not None:
        return "layer", found.layer, f"replaying the batch, {found.layer} is the first layer with a non-finite output"
    if not found.replayed and found.why_not is None:
        return (
            "unknown",
            None,
            f"the step's update already wrote {poisoned} non-finite weights, so the batch "
            "cannot be replayed with that step's weights; guard_nonfinite=True skips such updates and lets "
            "the first non-finite layer be found",
        )
    if not found.replayed:
        return "unknown", None, f"inputs and labels are finite; the batch was not replayed: {found.why_not}"
    if loss_recorded and not math.isfinite(u["loss"]):
        return "loss", None, "the batch was replayed: the forward pass is finite but the loss is not"
    return (
        "unknown",
        None,
        "the batch was replayed: inputs, labels and every layer's output are finite; the backward pass overflowed",
    )


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
    the activation probe replays when it was given no ``probe_data``. Inside an XLA-compiled step at most
    ``XLA_ROWS`` examples are kept: XLA copies the kept variable on every step, so its size is what each
    step pays. ``fit`` keeps the whole batch after the compiled step instead (``keep_outside``).
    """

    XLA_ROWS = 256

    def __init__(self, model: Any, sample_every: int = 0) -> None:
        self.layer_names: list[str] = []
        self._replay: keras.Model | None = None
        self.sample_every = sample_every
        spec = input_spec(model)
        self._kept = KeptBatch(spec, self.XLA_ROWS, "gw_kept_batch") if spec is not None else None
        self.samples = self._kept if sample_every else None
        self._before: PreStepWeights | None = None
        #: (wanted, its step): written by an XLA-compiled step for ``keep_outside`` (``allow_outside``).
        self._wanted: tuple[tf.Variable, tf.Variable] | None = None
        self.deferred = False  # set while tracing: the compiled step left the copy to ``keep_outside``
        if spec is None:
            return
        try:
            layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
            # One input as itself, not a list of one: called with the batch's own structure, Keras
            # would otherwise warn "The structure of `inputs` doesn't match" on every replay.
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            replay = keras.Model(inputs, [layer.output for layer in layers])
        except Exception:
            return
        self._replay = replay
        self.layer_names = [getattr(layer, "path", None) or layer.name for layer in layers]
        weights = list(replay.trainable_variables)
        if sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in weights) <= PRE_STEP_BUDGET_BYTES:
            self._before = PreStepWeights(weights)

    @property
    def notes(self) -> dict[str, str]:
        """What could not be kept, found while tracing: one line for the run's info."""
        kept = self._kept
        if self._replay is None or kept is None:
            return {}
        if kept.unavailable:
            return {
                "origin": f"the layer replay of a non-finite step is off ({kept.unavailable}); "
                "non-finite features and labels are still counted"
            }
        if kept.xla:
            return {
                "origin": f"under XLA (jit_compile) the layer replay of a non-finite step covers the first "
                f"{kept.rows} examples of its batch"
            }
        return {}

    # ------------------------------------------------------------------ graph side

    def keep(self, x: Any, step: tf.Tensor, healthy: tf.Tensor) -> None:
        """Keep the features of a non-finite step (to replay) and of the steps the probe is due.

        Under XLA after ``allow_outside`` (fit: ``FitSwap``), the compiled step only notes whether and
        for which step the batch is wanted (two scalars); ``keep_outside`` copies it after the step.
        """
        if self._kept is None:
            return
        when = None if self._replay is None else tf.logical_not(healthy)
        if self.sample_every:  # and the first step seen, so a run resumed mid-way has a batch at once
            due = tf.equal(tf.math.floormod(step, self.sample_every), 0) | self._kept.empty()
            when = due if when is None else when | due
        self.deferred = self._wanted is not None and in_xla_context() and not tf.distribute.has_strategy()
        if when is not None and self.deferred:
            assert self._wanted is not None
            self._wanted[0].assign(when)
            self._wanted[1].assign(tf.cast(step, tf.int64))
        elif when is not None:
            self._kept.keep(x, step, when)
        if self._before is not None and self._replay is not None:
            self._before.keep(step, tf.logical_not(healthy))

    def allow_outside(self) -> None:
        """The caller runs ``keep_outside`` after the compiled step (build eagerly, before the trace)."""
        if self._kept is not None and self._wanted is None:
            self._wanted = (
                tf.Variable(False, trainable=False, name="gw_kept_wanted"),
                tf.Variable(tf.constant(-1, tf.int64), trainable=False, name="gw_kept_wanted_step"),
            )

    def keep_outside(self, x: Any) -> None:
        """Traced after an XLA-compiled step, outside it: copy its features ``x`` if the step wanted them.

        XLA gives every variable the compiled step may write a fresh buffer on every step, so a batch
        kept inside costs each healthy step a copy of it; out here the copy is made only when wanted
        (a non-finite step, a probe's step), and the batch is kept whole.
        """
        if self.deferred and self._kept is not None and self._wanted is not None:
            self._kept.keep(x, self._wanted[1].read_value(), self._wanted[0].read_value())

    # ------------------------------------------------------------------ host side

    def replay(self, step: int, current_weights_ok: bool) -> Replay:
        """Replay the batch kept at ``step`` layer by layer, on the weights from before its update if kept.

        ``current_weights_ok``: the weights as they are now may stand in when no copy was kept.
        """
        if self._replay is None or self._kept is None:
            return Replay(why_not="only Sequential and functional models can be replayed layer by layer")
        if self._kept.kept_step != step:
            return Replay(why_not="a later step's batch replaced this step's kept batch before the host read it")
        kept = self._kept.read()
        if kept is None:
            return Replay(why_not="this step's batch could not be kept")
        before = self._before.values(step) if self._before is not None else None
        if before is None and not current_weights_ok:
            return Replay()
        features, complete = kept
        with warnings.catch_warnings():  # the replay is the monitor's business: nothing printed for it
            warnings.simplefilter("ignore")
            if before is None:
                outputs = self._replay(features, training=False)
            else:
                frozen = [v.value for v in self._replay.non_trainable_variables]
                outputs, _ = self._replay.stateless_call(before, frozen, features, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, out in enumerate(outputs):
            if not np.isfinite(keras.ops.convert_to_numpy(out)).all():
                return Replay(replayed=True, layer=self.layer_names[i])
        if not complete:
            return Replay(
                why_not=f"under XLA only the first {self._kept.rows} examples of the batch are kept, "
                "and they are finite throughout"
            )
        return Replay(replayed=True)


class PreStepWeights:
    """A copy of trainable weights, taken inside the step before its update, on the steps a condition picks.

    Build eagerly. Not under XLA (which would copy every kept variable on every step) nor under a
    distribution strategy (a mirrored weight is not copied in a replica's branch): there ``keep``
    does nothing and the replay uses the weights as the host finds them.
    """

    def __init__(self, variables: list[Any]) -> None:
        self.variables = variables
        self._copies = [
            tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"gw_before_{i}")
            for i, v in enumerate(variables)
        ]
        self._step = tf.Variable(tf.constant(-1, tf.int64), trainable=False, name="gw_before_step")

    def keep(self, step: tf.Tensor, when: tf.Tensor) -> None:
        """In-graph, before the optimizer's update: copy the weights of step ``step`` when ``when``."""
        if in_xla_context() or tf.distribute.has_strategy():
            return

        def take() -> tf.Tensor:
            for copy, v in zip(self._copies, self.variables):
                copy.assign(tf.convert_to_tensor(v))
            self._step.assign(tf.cast(step, tf.int64))
            return tf.constant(True)

        tf.cond(when, take, lambda: tf.constant(False))

    def values(self, step: int) -> list[Any] | None:
        """The weights as they were before step ``step``'s update, if that step's were kept."""
        if int(self._step.numpy()) != step:
            return None
        return [copy.value() for copy in self._copies]
