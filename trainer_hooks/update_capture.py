"""The update-to-weight ratio ‖Δw‖ / ‖w‖ per variable, measured inside the compiled step.

Keras optimizers change a weight through their own ``assign``/``assign_add``/
``assign_sub`` methods (``keras/src/optimizers/base_optimizer.py``: "should be
used in optimizers instead of ``variable.assign``"). While the step is traced,
``UpdateCapture`` puts a wrapper on those three methods of the optimizer
instance: for a watched variable it takes the squared norm of the update and
of the weight just before it (one fused ``l2_loss`` kernel each, no copy of the
weight: the update waits for the norm of the weight it changes). Nothing is
patched on any class, and the wrappers are gone once the step is traced.

Not seen: changes an optimizer makes to a weight directly (AdamW's decoupled
weight decay, constraints); a sparse (``IndexedSlices``) update's norm counts a
repeated row once per occurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import tensorflow as tf

from .batch_keep import in_xla_context

#: variable index -> (squared update norm, squared weight norm before it), as traced tensors (x 1/2: l2_loss).
Captured = dict[int, tuple[tf.Tensor, tf.Tensor]]
_METHODS = ("assign", "assign_add", "assign_sub")


def inner_optimizer(optimizer: Any) -> Any:
    """The optimizer that updates the weights (a ``LossScaleOptimizer``'s inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def variable_index(variables: Sequence[Any]) -> dict[int, int]:
    """id -> position, for a Keras variable and for the tf.Variable it holds (what ``update_step`` sees)."""
    index: dict[int, int] = {}
    for i, v in enumerate(variables):
        index[id(v)] = i
        if isinstance(v, keras.Variable):
            index[id(v.value)] = i
    return index


def _squared(value: Any) -> tf.Tensor:
    values = value.values if isinstance(value, tf.IndexedSlices) else value
    return tf.cast(tf.nn.l2_loss(values), tf.float64)


@contextmanager
def _patched(obj: Any, methods: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """``obj``'s methods replaced on the instance while the block runs (its own attributes put back after)."""
    saved = {name: vars(obj)[name] for name in methods if name in vars(obj)}
    for name, method in methods.items():
        setattr(obj, name, method)
    try:
        yield
    finally:
        for name in methods:
            if name in saved:
                setattr(obj, name, saved[name])
            else:
                delattr(obj, name)


def apply_measuring(
    optimizer: Any, index: dict[int, int], apply: Callable[[], Any], record: Callable[[Captured], None]
) -> None:
    """Run ``apply()`` (traced) and hand ``record`` what ``optimizer`` did to the variables of ``index``.

    ``record`` runs where the updates were made: after the inner optimizer's ``apply`` when a loss
    scaler wraps it (inside the scaler's branch for finite steps), else after ``apply()``. Updates made
    inside a branch the caller cannot see into (gradient accumulation) are not recorded.
    """
    opt = inner_optimizer(optimizer)
    captured: Captured = {}
    done = False

    def finish() -> None:
        nonlocal done
        if captured and not done and same_graph(captured):
            record(captured)
            done = True

    methods = {name: _wrap(name, getattr(opt, name), index, captured) for name in _METHODS}
    if opt is not optimizer:
        inner_apply = opt.apply

        def apply_inner(grads: Any, trainable_variables: Any = None) -> Any:
            out = inner_apply(grads, trainable_variables)
            finish()
            return out

        methods["apply"] = apply_inner
    with _patched(opt, methods):
        apply()
    finish()


def _wrap(
    name: str, original: Callable[[Any, Any], Any], index: dict[int, int], captured: Captured
) -> Callable[[Any, Any], Any]:

    def method(variable: Any, value: Any) -> Any:
        i = index.get(id(variable))
        if i is None or isinstance(value, (int, float)):
            return original(variable, value)
        w_sq = _squared(variable)
        delta = tf.cast(value, variable.dtype) - variable if name == "assign" else value
        d_sq = _squared(delta)
        if in_xla_context() and not isinstance(value, (tf.IndexedSlices, int, float)):
            # XLA orders by data, not control dependencies: to read the norm before the in-place update it
            # copied every weight on every step. A data dependency orders them instead; never taken
            # (a squared norm is not negative, NaN compares False), so the value is bitwise the same.
            value = tf.convert_to_tensor(value)
            value = tf.where(w_sq < 0, tf.zeros_like(value), value)
        with tf.control_dependencies([w_sq, d_sq]):  # the weight's norm is read before it changes
            out = original(variable, value)
        captured[i] = (d_sq, w_sq)
        return out

    return method


def ratios(captured: Captured, n: int) -> tf.Tensor:
    """‖Δw‖ / ‖w‖ per variable as a float64 vector of ``n`` (NaN: no update seen, or an all-zero weight)."""
    nan = tf.constant(float("nan"), tf.float64)
    if not n:
        return tf.zeros([0], tf.float64)
    d_sq = tf.stack([captured[i][0] if i in captured else nan for i in range(n)])
    w_sq = tf.stack([captured[i][1] if i in captured else nan for i in range(n)])
    ok = w_sq > 0  # NaN compares False
    return tf.where(ok, tf.sqrt(d_sq / tf.where(ok, w_sq, 1.0)), nan)


def same_graph(captured: Captured) -> bool:
    """May the captured tensors be used where the caller is tracing now (not from inside a branch)?"""
    if tf.executing_eagerly():
        return True
    graph = tf.compat.v1.get_default_graph()
    return all(getattr(t, "graph", graph) is graph for pair in captured.values() for t in pair)
