"""Routes a Keras optimizer's updates through ``GradientStats`` while installed.

Keras callbacks never see gradients, but ``fit`` traces its train step after
``on_train_begin``: wrapping the optimizer's ``apply`` (and ``scale_loss``, to
see the step's loss) on the instance there puts the statistics and the live
clipping inside the compiled step. Nothing is patched on any class.

With the TensorFlow backend a model may only be built (its variables created)
while that first step is traced, so ``GradientStats`` is created lazily, on
the first ``apply``, under ``tf.init_scope()``: its variables are made eagerly
and the gradients' variables are known by then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from .graph_stats import GradientStats

_CLIP_ATTRS = {"global_clipnorm": "global_norm", "clipnorm": "norm", "clipvalue": "value"}


def optimizer_clipping(optimizer: Any) -> tuple[str, float] | None:
    """The (mode, threshold) the optimizer was built with, if any."""
    for attr, mode in _CLIP_ATTRS.items():
        value = getattr(optimizer, attr, None)
        if value:
            return mode, float(value)
    return None


class OptimizerHook:
    """Install with ``install()``, undo with ``uninstall()``; constructing it changes nothing.

    ``make_stats(variables)`` builds the ``GradientStats`` for the variables of
    the first update; ``stats`` is ``None`` until then.
    """

    def __init__(self, optimizer: Any, make_stats: Callable[[list[Any]], GradientStats], every: int = 1) -> None:
        self.optimizer = optimizer
        self.make_stats = make_stats
        self.every = every
        self.stats: GradientStats | None = None
        self._saved_clip: dict[str, Any] = {}
        self._index: dict[int, int] = {}
        self._loss: Any = None  # the loss tensor of the step being traced

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
            return original_apply(self.route(list(grads), variables), trainable_variables)

        def scale_loss(loss: Any) -> Any:
            self._loss = loss
            return original_scale_loss(loss)

        opt.apply = apply
        opt.scale_loss = scale_loss

    def uninstall(self) -> None:
        opt = self.optimizer
        for name in ("apply", "scale_loss"):
            if name in vars(opt):
                delattr(opt, name)
        for attr, value in self._saved_clip.items():
            setattr(opt, attr, value)

    def route(self, grads: list[Any], variables: Sequence[Any], loss: Any = None) -> list[Any]:
        """Clip and measure ``grads`` (in ``variables`` order); returns them in the same order."""
        if self.stats is None:
            with tf.init_scope():
                self.stats = self.make_stats(list(variables))
            self._index = {id(v): i for i, v in enumerate(self.stats.variables)}
        if loss is None and self._loss is not None and _same_graph(self._loss, grads):
            loss = self._loss
        self._loss = None
        full: list[Any] = [None] * len(self.stats.variables)
        positions = []
        for g, v in zip(grads, variables):
            i = self._index.get(id(v))
            positions.append(i)
            if i is not None:
                full[i] = g
        clipped = self.stats.process(
            full, self.optimizer.iterations, self.optimizer.learning_rate, loss=loss, report_every=self.every
        )
        return [g if i is None else clipped[i] for g, i in zip(grads, positions)]


def _same_graph(tensor: Any, grads: list[Any]) -> bool:
    """True when ``tensor`` belongs to the graph (or eager context) the gradients live in."""
    g = next((g for g in grads if g is not None), None)
    return g is None or getattr(tensor, "graph", None) is getattr(g, "graph", None)
