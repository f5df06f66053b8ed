"""Hand-written tf.GradientTape loops: eager, tf.function, XLA-compiled (watch.apply_gradients)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from harness import Ctx, digits, pattern

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _setup(ctx: Ctx, clipnorm: float | None = None, batch: int = 16) -> tuple[Any, Any, Any]:
    x, y = digits(192)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    optimizer = ctx.optimizer(keras.optimizers.Adam(1e-3, global_clipnorm=clipnorm))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    return model, optimizer, data


def _loop(
    ctx: Ctx,
    model: Any,
    optimizer: Any,
    data: Any,
    compiled: dict[str, Any] | None = None,
    epochs: int = 1,
    check_every: int = 1,
) -> None:
    """``compiled``: tf.function options for the step (None: eager)."""
    with ctx.watch(model, optimizer) as watch:
        step = _step_fn(model, watch)
        step = tf.function(step, **compiled) if compiled is not None else step
        for _ in range(epochs):
            for i, (x, y) in enumerate(data):
                step(x, y)
                if i % check_every == 0 and watch.stop_requested:
                    break


def _step_fn(model: Any, watch: Any) -> Any:
    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = LOGITS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        watch.apply_gradients(grads, model.trainable_variables, loss=loss, inputs=(x, y))
        return loss

    return step


@pattern("keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py (eager loop)")
def eager_loop(ctx: Ctx) -> Any:
    model, optimizer, data = _setup(ctx)
    _loop(ctx, model, optimizer, data)
    return model


@pattern("keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py (@tf.function train_step)")
def tf_function_loop(ctx: Ctx) -> Any:
    model, optimizer, data = _setup(ctx)
    _loop(ctx, model, optimizer, data, {})
    return model


@pattern(
    "keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py "
    "(tf.function(jit_compile=True), stop_requested read every step)"
)
def jit_loop(ctx: Ctx) -> Any:
    model, optimizer, data = _setup(ctx)
    _loop(ctx, model, optimizer, data, {"jit_compile": True})
    return model


@pattern(
    "keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py "
    "(jit-compiled step, the loop logs and checks every 25 steps)",
)
def jit_loop_checks_every_25(ctx: Ctx) -> Any:
    model, optimizer, data = _setup(ctx, batch=4)  # 48 steps: read at steps 0 and 25, and at the end
    _loop(ctx, model, optimizer, data, {"jit_compile": True}, check_every=25)
    return model


@pattern(
    "keras-team/keras-io guides/serialization_and_saving.py (model.save in a training loop)",
)
def config_inside_watch(ctx: Ctx) -> Any:
    model, optimizer, data = _setup(ctx, clipnorm=2.0)
    with ctx.watch(model, optimizer) as watch:
        step = tf.function(_step_fn(model, watch))
        for x, y in data:
            step(x, y)
            # What a user logs or checkpoints mid-loop must read what they set.
            assert optimizer.get_config()["global_clipnorm"] == 2.0, optimizer.get_config()["global_clipnorm"]
    return model
