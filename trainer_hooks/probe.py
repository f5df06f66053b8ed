"""Activation probe: dead ReLU units and BatchNorm batch-vs-moving gaps on a probe batch.

Every ``every`` steps the probe runs one inference-mode forward pass of a small
batch (at most ``MAX_PROBE_EXAMPLES`` examples) and looks at the output of every
ReLU layer and the input of every BatchNormalization layer. The batch is
``probe_data`` when given; otherwise the training batch of the step the probe
is due, kept in the train step (batch_keep.py). Its cost is that one forward
pass, compiled once, every ``every`` steps on the training thread.

The layers' tensors are captured by wrapping their ``call`` on the instance for
the single trace of that forward pass (and restoring it right after), so any
layer the model actually calls is reached: nested in a custom layer, inside a
subclassed model, or in a functional graph alike. A layer the pass does not
reach, or whose output is not one tensor, is skipped and named once in the
run's info (``notes``).

- dead ReLU share of a layer: units (last axis) whose output is <= 0 for every
  example and position of the probe batch;
- BN gap of a layer: mean over channels of |batch mean - moving mean| /
  sqrt(moving variance + eps), plus mean |log((batch var + eps) / (moving var + eps))|.
  Near 0 when the moving statistics track the data; large when they never moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .batch_keep import KeptBatch

MAX_PROBE_EXAMPLES = 256
_ABSENT = object()


def _is_relu(fn: Any) -> bool:
    return fn is keras.activations.relu or getattr(fn, "__name__", "") == "relu"


def relu_layers(model: Any) -> list[Any]:
    """Layers whose output is a ReLU: ReLU layers, Activation('relu'), layers built with activation='relu'."""
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.ReLU) or _is_relu(getattr(layer, "activation", None)):
            out.append(layer)
    return out


def _name(layer: Any) -> str:
    return str(getattr(layer, "path", None) or layer.name)


def _crop(data: Any) -> Any:
    return tf.nest.map_structure(lambda a: tf.convert_to_tensor(np.asarray(a)[:MAX_PROBE_EXAMPLES]), data)


class _Capture:
    """While entered, every call of the given layers records its output (or first input) tensor."""

    def __init__(self, layers: list[tuple[Any, bool]]) -> None:
        self.layers = layers  # (layer, capture its input rather than its output)
        self.seen: dict[int, list[Any]] = {}
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> _Capture:
        for layer, take_input in self.layers:
            self._saved.append((layer, vars(layer).get("call", _ABSENT)))
            object.__setattr__(layer, "call", self._wrap(layer, layer.call, take_input))
        return self

    def __exit__(self, *exc: object) -> None:
        for layer, saved in self._saved:  # the user's layers exactly as they were
            if saved is _ABSENT:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", saved)
        self._saved.clear()

    def _wrap(self, layer: Any, call: Callable[..., Any], take_input: bool) -> Callable[..., Any]:
        def capturing(*args: Any, **kwargs: Any) -> Any:
            out = call(*args, **kwargs)
            seen = (args[0] if args else kwargs.get("inputs")) if take_input else out
            self.seen.setdefault(id(layer), []).append(seen)
            return out

        return capturing


class Prober:
    """Build once the model is built; ``run()`` returns ``(dead_relu, bn_gap)`` dicts keyed by layer path.

    ``probe_data`` is a fixed batch; without it ``samples`` (the training batches the step keeps)
    feed the probe. ``notes`` says, once, what could not be probed.
    """

    def __init__(self, model: Any, probe_data: Any, bn_layers: list[Any], samples: KeptBatch | None = None) -> None:
        self.model = model
        self.samples = samples if probe_data is None else None
        self.data = _crop(probe_data) if probe_data is not None else None
        self.relus: list[Any] = []
        self.bns: list[Any] = []
        self.notes: dict[str, str] = {}
        self._forward: Any = None
        first = self.data if self.data is not None else self._sample()
        if first is None:
            self.notes["probe"] = (
                "the activation probe is off: no probe_data, and no training batch was kept (a subclassed "
                "model, a multi-replica strategy, or apply_gradients called without inputs=(x, y))"
            )
            return
        self._build(first, relu_layers(model), list(bn_layers))

    @property
    def active(self) -> bool:
        """False when there is nothing to probe (see ``notes``)."""
        return self._forward is not None

    @property
    def relu_names(self) -> list[str]:
        return [_name(layer) for layer in self.relus]

    def _sample(self) -> Any:
        kept = self.samples.read() if self.samples is not None else None
        return _crop(kept[0]) if kept is not None else None

    def _build(self, data: Any, relus: list[Any], bns: list[Any]) -> None:
        """Trace the forward pass once, capturing every layer it reaches; keep those that gave one tensor."""
        capture = _Capture([(layer, False) for layer in relus] + [(layer, True) for layer in bns])
        order: list[tuple[Any, int]] = []  # (layer, how many of its calls) in output order

        def forward(x: Any) -> list[Any]:
            capture.seen.clear()
            self.model(x, training=False)
            order.clear()
            outs: list[Any] = []
            for layer, _ in capture.layers:
                got = capture.seen.get(id(layer), [])
                if got and all(isinstance(t, tf.Tensor) for t in got):
                    order.append((layer, len(got)))
                    outs.extend(got)
            return outs

        spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), data)
        try:
            with capture:
                self._forward = tf.function(forward).get_concrete_function(spec)
        except Exception as err:
            self.notes["probe"] = f"the activation probe is off: its forward pass failed ({type(err).__name__}: {err})"
            return
        self._order = list(order)
        reached = {id(layer) for layer, _ in order}
        self.relus = [layer for layer in relus if id(layer) in reached]
        self.bns = [layer for layer in bns if id(layer) in reached]
        skipped = [_name(layer) for layer, _ in capture.layers if id(layer) not in reached]
        if skipped:
            names = ", ".join(skipped)
            self.notes["probe"] = f"the activation probe cannot reach {len(skipped)} layer(s), skipped: {names}"

    def run(self) -> tuple[dict[str, float], dict[str, float]]:
        data = self.data if self.data is not None else self._sample()
        if self._forward is None or data is None:
            return {}, {}
        outs = iter(self._forward(data))
        captured = {id(layer): [next(outs).numpy() for _ in range(n)] for layer, n in self._order}
        dead: dict[str, float] = {}
        for layer in self.relus:
            a = np.concatenate([t.reshape(-1, t.shape[-1]) for t in captured[id(layer)]])
            dead[_name(layer)] = float(np.mean(~np.any(a > 0, axis=0)))
        gap: dict[str, float] = {}
        for layer in self.bns:
            v = np.concatenate([t.reshape(-1, t.shape[-1]) for t in captured[id(layer)]]).astype(np.float64)
            eps = float(getattr(layer, "epsilon", 1e-3))
            mm = np.asarray(layer.moving_mean, np.float64).reshape(-1)
            mv = np.asarray(layer.moving_variance, np.float64).reshape(-1)
            mean_gap = np.mean(np.abs(v.mean(0) - mm) / np.sqrt(mv + eps))
            var_gap = np.mean(np.abs(np.log((v.var(0) + eps) / (mv + eps))))
            gap[_name(layer)] = float(mean_gap + var_gap)
        return dead, gap
