"""What the alert rules need to know about the model's layers, read before a session's first hello.

* ``activations``: each layer's activation function by name (a recurrent layer's is its
  cell's), so that a layer whose gradients are all zero is said to have saturated
  (tanh, sigmoid) or dead (ReLU) units, as it has.
* ``bn_inference``: the BatchNormalization layers the model's own code runs in inference
  mode, i.e. that a training-mode call of the model does not update. Fine-tuning as
  keras-io's transfer-learning guide intends it calls the base with ``training=False``
  while gamma and beta train: a choice, not the frozen-BatchNorm fault (a model called
  without ``training=True``, whose layers a training-mode call does update).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

log = logging.getLogger("gradwatch.trainer")

_ASSIGNS = frozenset({"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"})


@dataclass(frozen=True)
class ModelFacts:
    activations: dict[str, str] = field(default_factory=dict)
    bn_inference: list[str] = field(default_factory=list)


def _path(layer: Any) -> str:
    return str(getattr(layer, "path", None) or layer.name)


def _activation_name(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None)
    return str(name) if name else None


def layer_activations(model: Any) -> dict[str, str]:
    """Layer path -> activation name, for every layer with an ``activation`` (or a cell that has one)."""
    out: dict[str, str] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        fn = getattr(layer, "activation", None) or getattr(getattr(layer, "cell", None), "activation", None)
        name = _activation_name(fn) if callable(fn) else None
        if name:
            out[_path(layer)] = name
    return out


def _input_specs(model: Any) -> Any:
    """Specs to trace ``model`` with: a functional model's inputs, else the shape it was built with."""
    inputs = getattr(model, "inputs", None)
    if inputs:
        specs = [tf.TensorSpec(tuple(t.shape), tf.as_dtype(t.dtype)) for t in inputs]
        return specs[0] if len(specs) == 1 else specs
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        (shape,) = shapes.values()
        return tf.TensorSpec(tuple(shape), tf.as_dtype(getattr(model, "input_dtype", None) or "float32"))
    return None


def inference_mode_batchnorm(model: Any, bn_layers: list[Any]) -> list[str]:
    """Paths of the BN layers a ``model(x, training=True)`` call leaves unupdated ([] when it cannot tell).

    Traced, never run: nothing of the model changes, its random seeds included.
    """
    if not any(v.trainable for layer in bn_layers for v in layer.trainable_weights):
        return []  # no gamma/beta trains: the rule never judges these layers, so nothing to find out
    specs = _input_specs(model)
    if specs is None:
        return []
    try:
        graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(specs).graph
    except Exception as err:  # an unusual model: the rule keeps judging every layer
        log.debug("could not trace the model to find inference-mode BatchNorm layers: %s", err)
        return []
    internal = {id(outer): inner for outer, inner in graph.captures}
    written = {id(op.inputs[0]) for op in graph.get_operations() if op.type in _ASSIGNS}
    out = []
    for layer in bn_layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        handles = [getattr(getattr(v, "value", v), "handle", None) for v in (layer.moving_mean, layer.moving_variance)]
        captured = [internal.get(id(h)) for h in handles if h is not None]
        if captured and not any(c is not None and id(c) in written for c in captured):
            out.append(_path(layer))
    return out


def model_facts(model: Any, bn_layers: list[Any]) -> ModelFacts:
    """The facts, or none when the model cannot say (monitoring starts either way)."""
    try:
        return ModelFacts(layer_activations(model), inference_mode_batchnorm(model, bn_layers))
    except Exception as err:
        log.debug("could not read the model's layers: %s", err)
        return ModelFacts()
