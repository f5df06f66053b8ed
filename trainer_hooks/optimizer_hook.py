"""Routes a Keras optimizer's updates through ``GradientStats`` while installed.

Keras callbacks never see gradients, but ``fit`` traces its train step after
``on_train_begin``: wrapping the optimizer's ``apply`` (and ``scale_loss``, to
see the step's loss) on the instance there puts the statistics and the live
clipping inside the compiled step. Nothing is patched on any class.

With the TensorFlow backend a model may only be built (its variables created)
while that first step is traced, so ``GradientStats`` is created lazily, on
the first ``apply``, under ``tf.init_scope()``: its variables are made eagerly
and the gradients' variables are known by then.

Around the optimizer's own update the hook can skip a non-finite step
(``guard_nonfinite``: weights and slots untouched). The update ratio ‖Δw‖/‖w‖
is measured around the optimizer's own updates, in the step (update_capture.py).

Under mixed precision Keras wraps the optimizer in a ``LossScaleOptimizer``,
whose ``apply`` receives gradients multiplied by the dynamic loss scale. The
hook unscales them first, so norms and clipping are those of the true
gradients, and hands the scaler the clipped gradients scaled back; a step the
scaler skips (non-finite after scaling) is reported as skipped.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from .batch_keep import in_xla_context
from .clipping import map_values
from .graph_stats import GradientStats
from .multi_worker import WorkerSync, worker_count
from .origin import OriginFinder
from .update_capture import apply_measuring, ratios, variable_index

_CLIP_ATTRS = {"global_clipnorm": "global_norm", "clipnorm": "norm", "clipvalue": "value"}
ApplyFn = Callable[[list[Any], list[Any]], Any]


def optimizer_clipping(optimizer: Any) -> tuple[str, float] | None:
    """The (mode, threshold) the optimizer was built with, if any."""
    for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):  # a LossScaleOptimizer's inner one clips
        for attr, mode in _CLIP_ATTRS.items():
            value = getattr(opt, attr, None)
            if value:
                return mode, float(value)
    return None


def build_like_keras(optimizer: Any, variables: list[Any]) -> None:
    """Build ``optimizer`` for ``variables`` as its own first ``apply`` would: inside its name scope, so its
    slots get the paths Keras gives them (``loss_scale_optimizer/adam/...``), and a checkpoint matches."""
    with keras.name_scope(optimizer.name, caller=optimizer):
        optimizer.build(variables)


def learning_rate_variable(optimizer: Any) -> Any:
    """The variable holding ``optimizer``'s learning rate, or None for a schedule or callable.

    A ``LossScaleOptimizer`` delegates to its inner optimizer (its own one is an unused 0).
    """
    lr = getattr(getattr(optimizer, "inner_optimizer", optimizer), "_learning_rate", None)
    return lr if isinstance(lr, (keras.Variable, tf.Variable)) else None


def _same_graph(tensor: Any, grads: list[Any]) -> bool:
    """True when ``tensor`` belongs to the graph (or eager context) the gradients live in."""
    g = next((g for g in grads if g is not None), None)
    return g is None or all(getattr(t, "graph", None) is getattr(g, "graph", None) for t in tf.nest.flatten(tensor))


class OptimizerHook:
    """Install with ``install()``, undo with ``uninstall()``; constructing it changes nothing.

    ``make_stats(variables)`` builds the ``GradientStats`` for the variables of
    the first update; ``stats`` is ``None`` until then. ``make_origin()`` builds
    the ``OriginFinder`` used on non-finite steps.
    """

    def __init__(
        self,
        optimizer: Any,
        make_stats: Callable[[list[Any]], GradientStats],
        every: int = 1,
        *,
        guard_nonfinite: bool = False,
        make_origin: Callable[[], OriginFinder] | None = None,
        strategy: Any = None,
    ) -> None:
        self.optimizer = optimizer
        self.strategy = strategy  # the model's tf.distribute strategy: our variables are created under it
        self.make_stats = make_stats
        self.every = every
        self.guard_nonfinite = guard_nonfinite
        self.make_origin = make_origin
        self.stats: GradientStats | None = None
        self.origin: OriginFinder | None = None
        self.sync: WorkerSync | None = None  # set under a MultiWorkerMirroredStrategy with several workers
        self._step: Any = None  # the step number of the update being traced
        self._guard_declined = False
        self._index: dict[int, int] = {}
        self._ratio_index: dict[int, int] = {}
        self._loss: Any = None  # the loss tensor of the step being traced
        #: Whether the statistics were made while tracing an XLA-compiled step (``prepare``): there the
        #: host reads the ring only when the loop looks, so it is made larger (monitor.py).
        self.traced_in_xla = False
        self._inputs: Any = None  # (x, y) of the step being traced
        #: The step number while the optimizer's own update runs (Keras calls ``_clip_gradients`` inside it).
        self._clipping_step: Any = None
        #: Set by ``FitSwap``: ``keep_outside`` runs after each compiled step, outside XLA (origin.py).
        self.keeps_outside = False

    # ------------------------------------------------------------------ install / uninstall

    def take_over_clipping(self) -> None:
        """Route the optimizer's own clipping through the monitor (which clips now); ``uninstall`` undoes it.

        Keras clips in ``_clip_gradients``; replacing that on the instance (not the
        ``clipnorm``/``global_clipnorm``/``clipvalue`` attributes) keeps the user's
        settings readable, in ``get_config()`` and in a model saved meanwhile.
        """
        for opt in self._clipping_optimizers():
            opt._clip_gradients = self._clip_hook(opt)

    def _clipping_optimizers(self) -> list[Any]:
        """The optimizer and, for a ``LossScaleOptimizer``, the one inside that clips."""
        inner = getattr(self.optimizer, "inner_optimizer", None)
        return [self.optimizer] if inner is None else [self.optimizer, inner]

    def _clip_hook(self, opt: Any) -> Callable[[list[Any]], list[Any]]:
        def clip_gradients(grads: list[Any]) -> list[Any]:
            # Called where Keras clips: every update, or with gradient accumulation the averaged gradient
            # of an update step. Without accumulation the monitor has clipped in ``update`` already.
            if self.stats is None or self._clipping_step is None:  # an update not routed through the monitor
                return list(type(opt)._clip_gradients(opt, grads))
            if not getattr(opt, "gradient_accumulation_steps", None):
                return list(grads)
            return self.stats.clip_applied(list(grads), self._clipping_step)

        return clip_gradients

    def install(self) -> None:
        """Route the optimizer's ``apply`` (as ``fit`` calls it) through the statistics."""
        opt = self.optimizer
        self.take_over_clipping()
        original_apply = opt.apply
        original_scale_loss = opt.scale_loss

        def apply(grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> Any:
            variables = list(trainable_variables) if trainable_variables is not None else opt._trainable_variables
            self.update(list(grads), variables, lambda g, v: original_apply(g, trainable_variables))

        def scale_loss(loss: Any) -> Any:
            self._loss = loss
            return original_scale_loss(loss)

        opt.apply = apply
        opt.scale_loss = scale_loss

    def note_inputs(self, inputs: Any) -> None:
        """The (x, y) of the step being traced, for finding where a non-finite step came from."""
        self._inputs = inputs

    def end_step(self, own_loss: Any = None) -> None:
        """After the train step (traced): the statistics counted the step themselves.

        ``own_loss``: the step's loss as a custom train step tracked it (step_loss.py), recorded when
        the optimizer's ``scale_loss`` did not see one.
        """
        step, self._step = self._step, None
        stats = self.stats
        if own_loss is None or step is None or stats is None or stats.loss_recorded:
            return
        if _same_graph(own_loss, [step]):
            stats.record_loss(step, own_loss)

    def allow_keep_outside(self) -> None:
        """``keep_outside`` will run after each compiled step (build eagerly: it may create variables)."""
        self.keeps_outside = True
        if self.origin is not None:
            self.origin.allow_outside()

    def keep_outside(self, data: Any) -> None:
        """Traced just after an XLA-compiled step, outside it, on its batch ``data`` (see ``FitSwap``)."""
        if self.origin is None or not self.origin.deferred:
            return
        # As Keras' own wrapper does (``_autoconvert_optionals``): an absent part arrives as an Optional.
        data = tf.nest.map_structure(lambda t: None if isinstance(t, tf.experimental.Optional) else t, data)
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.origin.keep_outside(x)

    def uninstall(self) -> None:
        opt = self.optimizer
        for name in ("apply", "scale_loss"):
            if name in vars(opt):
                delattr(opt, name)
        for each in self._clipping_optimizers():
            if "_clip_gradients" in vars(each):
                del each._clip_gradients

    def prepare_if_built(self, model: Any) -> bool:
        """``prepare`` for ``model``'s weights now if it is fully built; False (nothing done) if not."""
        if model.built and model.trainable_variables and all(layer.built for layer in model._flatten_layers()):
            self.prepare(model.trainable_variables)
            return True
        return False

    def prepare(self, variables: Sequence[Any]) -> None:
        """Create the statistics (and build the optimizer) for ``variables``, eagerly.

        Called before training when the model is already built, so the first
        trace creates no variable and TensorFlow traces the step exactly once;
        otherwise called from that first trace (under ``tf.init_scope``).
        """
        self.traced_in_xla = in_xla_context()  # before init_scope leaves the traced graph
        scope = self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()
        with scope, tf.init_scope():
            self.stats = self.make_stats(list(variables))
            if worker_count(self.strategy) > 1:
                self.sync = WorkerSync(self.strategy)
            if not self.optimizer.built:  # nothing may be created inside the tf.cond of update()
                build_like_keras(self.optimizer, list(variables))
        with tf.init_scope():  # outside the strategy: only a single replica keeps its batch
            self.origin = self.make_origin() if self.make_origin is not None else None
            if self.origin is not None and self.keeps_outside:
                self.origin.allow_outside()
        self._index = {id(v): i for i, v in enumerate(self.stats.variables)}
        self._ratio_index = variable_index(self.stats.variables)

    # ------------------------------------------------------------------ the update, traced

    def update(
        self, grads: list[Any], variables: list[Any], apply_fn: ApplyFn, loss: Any = None, inputs: Any = None
    ) -> None:
        """Measure and clip ``grads``, then let ``apply_fn(grads, variables)`` update the weights."""
        opt = self.optimizer
        if self.stats is None:
            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                # No variable may be created inside a replica's step; Keras' own optimizer fails
                # here too, with a graph error that does not say why.
                raise RuntimeError(
                    "gradwatch: under a distribution strategy the model must be built before the first step "
                    "(start it with keras.Input, or call it once on a batch, before `monitor.watch(...)`)"
                )
            self.prepare(variables)
        stats = self.stats
        assert stats is not None
        if loss is None and self._loss is not None and _same_graph(self._loss, grads):
            loss = self._loss
        if inputs is None and self._inputs is not None and _same_graph(self._inputs, grads):
            inputs = self._inputs
        self._loss = self._inputs = None

        # Under a multi-replica strategy each replica holds a share of the gradient
        # and the optimizer sums them: measure and clip that sum, the gradient
        # actually applied, and hand each replica its share of the clipped sum.
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if replicas > 1:
            present = [i for i, g in enumerate(grads) if g is not None]
            reduce = [grads[i] for i in present]
            if self.sync is not None:  # the chief's settings, in float64 (exact), reduced on their own
                shared = ctx.all_reduce(tf.distribute.ReduceOp.SUM, self.sync.offer(ctx, stats, opt.learning_rate))
                self.sync.follow(shared, stats, learning_rate_variable(opt))
            summed = list(ctx.all_reduce(tf.distribute.ReduceOp.SUM, reduce))
            grads = list(grads)
            for i, g in zip(present, summed):
                grads[i] = g
            if loss is not None:
                loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
        loss_scale = opt.dynamic_scale if isinstance(opt, keras.optimizers.LossScaleOptimizer) else None
        full: list[Any] = [None] * len(stats.variables)
        positions = [self._index.get(id(v)) for v in variables]
        for g, position in zip(grads, positions):
            if position is not None:
                full[position] = g if g is None or loss_scale is None else _divided(g, loss_scale)
        origin = self.origin if replicas == 1 else None  # a replica's shard is not the batch to replay
        # With gradient accumulation Keras clips the averaged gradient of an update step, in
        # ``_clip_gradients`` (take_over_clipping): measure each micro-batch here, clip there.
        accumulating = bool(getattr(getattr(opt, "inner_optimizer", opt), "gradient_accumulation_steps", None))
        clipped_full, healthy, step = stats.process(
            full, opt.learning_rate, loss, inputs, origin, clip=not accumulating
        )
        self._step = step  # end_step records the step's own loss against it

        def routed(g: list[Any], v: list[Any]) -> Any:
            self._clipping_step = step  # for Keras' call of _clip_gradients inside (take_over_clipping)
            try:
                return apply_fn(g, v)
            finally:
                self._clipping_step = None

        if loss_scale is not None:
            clipped_full = [
                g if g is None else map_values(g, lambda v: v * tf.cast(loss_scale, v.dtype)) for g in clipped_full
            ]
        clipped = [g if i is None else clipped_full[i] for g, i in zip(grads, positions)]
        if stats.update_ratio and replicas == 1 and not tf.distribute.has_strategy():
            apply_fn = self._measuring(apply_fn, step)
        if replicas > 1:
            routed([g if g is None else _divided(g, replicas) for g in clipped], variables)
        guard = self.guard_nonfinite and loss_scale is None  # the scaler skips non-finite steps itself
        if replicas > 1 or (guard and tf.distribute.has_strategy()):
            # A tf.cond around the optimizer is not allowed under a strategy: its update merges across
            # replicas inside (``merge_call``), even with one replica. No guard there.
            if guard and not self._guard_declined:
                self._guard_declined = True
                warnings.warn(
                    "gradwatch: guard_nonfinite cannot skip steps under a tf.distribute strategy "
                    f"({type(tf.distribute.get_strategy()).__name__}); non-finite steps are still counted and "
                    "reported, and pause_on=('nonfinite',) can stop the damage",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if replicas == 1:
                routed(clipped, variables)
            return
        if loss_scale is not None:
            # The scaler skips non-finite steps itself (and lowers its scale): let it.
            routed(clipped, variables)
            stats.record_skipped(step, tf.logical_not(healthy))
            return
        if not guard:
            routed(clipped, variables)
            return
        skip = tf.logical_not(healthy)

        def skipped() -> tf.Tensor:
            return tf.constant(True)  # weights, slots and the optimizer's own step count stay as they were

        def applied() -> tf.Tensor:
            routed(clipped, variables)
            return tf.constant(False)

        stats.record_skipped(step, tf.cond(skip, skipped, applied))

    def _measuring(self, apply_fn: ApplyFn, step: Any) -> ApplyFn:
        """``apply_fn`` that also writes the update-to-weight ratio of the step into its row."""
        stats = self.stats
        assert stats is not None
        n = stats.layout.n_vars

        def apply(grads: list[Any], variables: list[Any]) -> None:
            apply_measuring(
                self.optimizer,
                self._ratio_index,
                lambda: apply_fn(grads, variables),
                lambda captured: stats.record_updates(step, ratios(captured, n)),
            )

        return apply


def _divided(g: Any, divisor: Any) -> Any:
    """``g / divisor``, a sparse gradient kept sparse."""
    return map_values(g, lambda v: v / tf.cast(divisor, v.dtype))
