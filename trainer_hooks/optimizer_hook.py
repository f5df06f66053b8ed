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
is measured on the host (session.py): wrapping the optimizer in a branch to
measure it in the step cost more than the measurement.

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
from .graph_stats import GradientStats
from .multi_worker import WorkerSync, worker_count
from .origin import OriginFinder

_CLIP_ATTRS = {"global_clipnorm": "global_norm", "clipnorm": "norm", "clipvalue": "value"}
ApplyFn = Callable[[list[Any], list[Any]], Any]


def optimizer_clipping(optimizer: Any) -> tuple[str, float] | None:
    """The (mode, threshold) the optimizer was built with, if any."""
    for attr, mode in _CLIP_ATTRS.items():
        value = getattr(optimizer, attr, None)
        if value:
            return mode, float(value)
    return None


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
        self._saved_clip: dict[str, Any] = {}
        self._index: dict[int, int] = {}
        self._loss: Any = None  # the loss tensor of the step being traced
        #: Whether the statistics were made while tracing an XLA-compiled step (``prepare``): there the
        #: host reads the ring only when the loop looks, so it is made larger (monitor.py).
        self.traced_in_xla = False
        self._inputs: Any = None  # (x, y) of the step being traced
        self._step: Any = None  # the step number of the update being traced

    # ------------------------------------------------------------------ install / uninstall

    def take_over_clipping(self) -> None:
        """Switch the optimizer's own clipping off (the monitor clips now); ``uninstall`` restores it."""
        opt = self.optimizer
        self._saved_clip = {attr: getattr(opt, attr, None) for attr in _CLIP_ATTRS}
        for attr in _CLIP_ATTRS:
            setattr(opt, attr, None)

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

    def uninstall(self) -> None:
        opt = self.optimizer
        for name in ("apply", "scale_loss"):
            if name in vars(opt):
                delattr(opt, name)
        for attr, value in self._saved_clip.items():
            setattr(opt, attr, value)

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
                self.optimizer.build(list(variables))
        with tf.init_scope():  # outside the strategy: only a single replica keeps its batch
            self.origin = self.make_origin() if self.make_origin is not None else None
        self._index = {id(v): i for i, v in enumerate(self.stats.variables)}

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
            if self.sync is not None:  # the chief's settings travel with the gradients
                reduce.append(self.sync.offer(ctx, stats, opt.learning_rate))
            summed = list(ctx.all_reduce(tf.distribute.ReduceOp.SUM, reduce))
            if self.sync is not None:
                self.sync.follow(summed.pop(), stats, learning_rate_variable(opt))
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
                full[position] = g if g is None or loss_scale is None else g / tf.cast(loss_scale, g.dtype)
        origin = self.origin if replicas == 1 else None  # a replica's shard is not the batch to replay
        clipped_full, healthy, step = stats.process(full, opt.learning_rate, loss, inputs, origin)
        self._step = step
        if loss_scale is not None:
            clipped_full = [g if g is None else g * tf.cast(loss_scale, g.dtype) for g in clipped_full]
        clipped = [g if i is None else clipped_full[i] for g, i in zip(grads, positions)]
        if replicas > 1:
            # A tf.cond around the optimizer is not allowed in a replica context (it
            # merges across replicas inside): no guard here.
            if self.guard_nonfinite:
                warnings.warn(
                    "gradwatch: guard_nonfinite cannot skip steps under a multi-replica strategy; non-finite "
                    "steps are still counted and reported, and pause_on=('nonfinite',) can stop the damage",
                    RuntimeWarning,
                    stacklevel=2,
                )
            apply_fn([g if g is None else g / replicas for g in clipped], variables)
            return
        if loss_scale is not None:
            # The scaler skips non-finite steps itself (and lowers its scale): let it.
            apply_fn(clipped, variables)
            stats.record_skipped(step, tf.logical_not(healthy))
            return
        if not self.guard_nonfinite:
            apply_fn(clipped, variables)
            return
        skip = tf.logical_not(healthy)

        def skipped() -> tf.Tensor:
            return tf.constant(True)  # weights, slots and the optimizer's own step count stay as they were

        def applied() -> tf.Tensor:
            apply_fn(clipped, variables)
            return tf.constant(False)

        stats.record_skipped(step, tf.cond(skip, skipped, applied))
