"""Activation probe: dead ReLU units and BatchNorm batch-vs-moving gaps on a fixed batch.

Every ``every`` steps the probe runs one inference-mode forward pass of a small
fixed batch (``probe_data``, at most ``MAX_PROBE_EXAMPLES`` examples) through a
model that exposes the outputs of every ReLU layer and the inputs of every
BatchNormalization layer. Its cost is that one forward pass, compiled once,
every ``every`` steps on the training thread. It needs a Sequential or
functional model (subclassed models have no symbolic layer outputs).

- dead ReLU share of a layer: units (last axis) whose output is <= 0 for every
  example and position of the probe batch;
- BN gap of a layer: mean over channels of |batch mean - moving mean| /
  sqrt(moving variance + eps), plus mean |log((batch var + eps) / (moving var + eps))|.
  Near 0 when the moving statistics track the data; large when they never moved.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

MAX_PROBE_EXAMPLES = 256


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


class Prober:
    """Build once the model is built; ``run()`` returns ``(dead_relu, bn_gap)`` dicts keyed by layer path."""

    def __init__(self, model: Any, probe_data: Any, bn_layers: list[Any]) -> None:
        self.relus = relu_layers(model)
        self.bns = list(bn_layers)
        self.data = tf.convert_to_tensor(np.asarray(probe_data)[:MAX_PROBE_EXAMPLES])
        outputs = [layer.output for layer in self.relus] + [layer.input for layer in self.bns]
        self._model = self._forward = None
        if outputs:
            probe = self._model = keras.Model(model.inputs, outputs)
            self._forward = tf.function(lambda x: probe(x, training=False))

    @property
    def relu_names(self) -> list[str]:
        return [_name(layer) for layer in self.relus]

    def run(self) -> tuple[dict[str, float], dict[str, float]]:
        if self._forward is None:
            return {}, {}
        outs = self._forward(self.data)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        dead: dict[str, float] = {}
        for layer, act in zip(self.relus, outs[: len(self.relus)]):
            a = act.numpy().reshape(-1, act.shape[-1])
            dead[_name(layer)] = float(np.mean(~np.any(a > 0, axis=0)))
        gap: dict[str, float] = {}
        for layer, x in zip(self.bns, outs[len(self.relus) :]):
            v = x.numpy().reshape(-1, x.shape[-1]).astype(np.float64)
            eps = float(getattr(layer, "epsilon", 1e-3))
            mm = np.asarray(layer.moving_mean, np.float64).reshape(-1)
            mv = np.asarray(layer.moving_variance, np.float64).reshape(-1)
            mean_gap = np.mean(np.abs(v.mean(0) - mm) / np.sqrt(mv + eps))
            var_gap = np.mean(np.abs(np.log((v.var(0) + eps) / (mv + eps))))
            gap[_name(layer)] = float(mean_gap + var_gap)
        return dead, gap
