"""Train one zoo run for real, through one of four doors: ``fit``, a custom ``train_step``, a ``watch()`` loop,
or ``fit`` under mixed precision. Every door uses ``GradientMonitor(run_name=...)`` with its defaults
(only the server address and token are given, since the benchmark's server is on a free port).

- custom ``train_step``: written after keras-io guides/custom_train_step_in_tensorflow.py (GradientTape,
  ``compute_loss``, ``optimizer.apply``, a loss tracker: so the loss in Keras' logs is a running mean);
- ``watch()`` loop: after keras-io guides/writing_a_custom_training_loop_in_tensorflow.py (a compiled step
  over a ``tf.data`` pipeline);
- mixed precision: ``keras.mixed_precision.set_global_policy("mixed_float16")`` with float32 logits, as in
  the Keras mixed-precision guide; ``compile`` wraps the optimizer in a ``LossScaleOptimizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .zoo_models import Data, ModelSpec, build


@dataclass(frozen=True)
class TrainSpec:
    api: str  # fit | custom | watch | mixed
    steps: int
    batch: int
    training_flag: bool = True  # False: the model is called without training=True (frozen BatchNorm)
    shuffle: bool = True
    onehot_loss: bool = False  # categorical cross-entropy on float one-hot labels (NaN labels possible)


def _custom_model_cls(training: bool) -> Any:
    import keras
    import tensorflow as tf

    class CustomStep(keras.Model):  # type: ignore[misc]
        def train_step(self, data: Any) -> Any:
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=training)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    return CustomStep


def labels(data: Data, onehot: bool) -> np.ndarray:
    return np.eye(10, dtype="float32")[data.y] if onehot else data.y


def train(
    model_spec: ModelSpec, make_optimizer: Any, data: Data, spec: TrainSpec, monitor: Any, y: np.ndarray | None = None
) -> Any:
    """Train for about ``spec.steps`` steps; returns the model."""
    import keras

    y = labels(data, spec.onehot_loss) if y is None else y
    loss = (
        keras.losses.CategoricalCrossentropy(from_logits=True)
        if spec.onehot_loss
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    if spec.api == "mixed":
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        cls = _custom_model_cls(spec.training_flag) if spec.api == "custom" else None
        model = build(model_spec, cls)
        opt = make_optimizer()
        if spec.api == "watch":
            return _watch_loop(model, opt, loss, data.x, y, spec, monitor)
        model.compile(optimizer=opt, loss=loss)
        per_epoch = -(-len(data.x) // spec.batch)
        epochs = max(1, round(spec.steps / per_epoch))
        model.fit(data.x, y, batch_size=spec.batch, epochs=epochs, shuffle=spec.shuffle, verbose=0, callbacks=[monitor])
        return model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _watch_loop(model: Any, opt: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray, spec: TrainSpec, monitor: Any) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if spec.shuffle:
        ds = ds.shuffle(len(x), seed=0, reshuffle_each_iteration=True)
    ds = ds.batch(spec.batch).repeat().take(spec.steps)
    training = spec.training_flag
    with monitor.watch(model, opt) as watch:

        @tf.function
        def step(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=training))
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss, inputs=(xb, yb))

        for xb, yb in ds:
            step(xb, yb)
            if watch.stop_requested:
                break
    return model


def dead_share(model: Any, x: np.ndarray) -> float:
    """The largest share of units that output zero for every example, over the model's ReLU layers."""
    import keras

    worst = 0.0
    for layer in model.layers:
        act = getattr(layer, "activation", None)
        if getattr(act, "__name__", "") != "relu" or not hasattr(layer, "output"):
            continue
        out = keras.Model(model.inputs, layer.output)(x[:256], training=False)
        out = np.asarray(out).reshape(len(x[:256]), -1)
        worst = max(worst, float(np.mean((out <= 0).all(axis=0))))
    return worst
