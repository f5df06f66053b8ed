"""Mixed precision (fit and a loop with LossScaleOptimizer) and a one-device MirroredStrategy."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from harness import Ctx, digits, pattern

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mixed_model() -> Any:
    keras.mixed_precision.set_global_policy("mixed_float16")  # the harness sets float32 back
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
            keras.layers.Activation("linear", dtype="float32"),
        ]
    )


@pattern(
    "https://keras.io/api/mixed_precision/ (mixed_float16; compile wraps a LossScaleOptimizer)",
)
def mixed_precision_fit(ctx: Ctx) -> Any:
    x, y = digits(128)
    model = _mixed_model()
    model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("https://keras.io/api/mixed_precision/loss_scale_optimizer/ (scale_loss in a hand-written loop)")
def mixed_precision_loop(ctx: Ctx) -> Any:
    x, y = digits(128)
    model = _mixed_model()
    optimizer = ctx.optimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)))

    with ctx.watch(model, optimizer) as watch:

        @tf.function
        def step(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = LOGITS(yb, model(xb, training=True))
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)

        for xb, yb in tf.data.Dataset.from_tensor_slices((x, y)).batch(16):
            step(xb, yb)
    return model


def _mirrored(ctx: Ctx) -> Any:
    x, y = digits(96)
    strategy = tf.distribute.MirroredStrategy()  # one replica on this CPU-only machine
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
        )
        model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io guides/distributed_training_with_tensorflow.py (MirroredStrategy, one device)")
def mirrored_one_device(ctx: Ctx) -> Any:
    return _mirrored(ctx)


@pattern(
    "keras-team/keras-io guides/distributed_training_with_tensorflow.py (MirroredStrategy) "
    "with GradientMonitor(guard_nonfinite=True)",
    monitor_kwargs={"guard_nonfinite": True},
    # issue 16 item 3: the guard cannot wrap a strategy's update; it declines, once, instead of crashing fit()
    expected_output=("guard_nonfinite cannot skip steps under a tf.distribute strategy",),
)
def mirrored_one_device_guarded(ctx: Ctx) -> Any:
    return _mirrored(ctx)
