"""Architectures: BatchNorm CNN, a transformer block, a functional multi-input/multi-output model,
a custom layer with add_loss, a subclassed model, a frozen head."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from harness import Ctx, digits, pattern

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pattern("keras-team/keras-io examples/timeseries/timeseries_classification_from_scratch.py (Conv+BN+ReLU)")
def batchnorm_cnn(ctx: Ctx) -> Any:
    x, y = digits(128, flat=False)
    inputs = keras.Input((8, 8, 1))
    h = inputs
    for filters in (8, 8):
        h = keras.layers.Conv2D(filters, 3, padding="same")(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io examples/timeseries/timeseries_classification_transformer.py (encoder block)")
def transformer_block(ctx: Ctx) -> Any:
    x, y = digits(96, flat=False)
    x = x[..., 0]  # 8 time steps of 8 features
    inputs = keras.Input((8, 8))
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    h = keras.layers.LayerNormalization(epsilon=1e-6)(h + inputs)
    ff = keras.layers.Conv1D(16, 1, activation="relu")(h)
    h = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Conv1D(8, 1)(ff) + h)
    h = keras.layers.GlobalAveragePooling1D(data_format="channels_last")(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io guides/functional_api.py (the ticket model: several inputs and outputs)")
def multi_input_multi_output(ctx: Ctx) -> Any:
    # Numeric stand-ins for title/body/tags; a priority regression and a department classification head.
    rng = np.random.default_rng(0)
    title, body, tags = (rng.standard_normal((96, d)).astype("float32") for d in (6, 10, 4))
    priority = title[:, :1] + 0.5 * tags[:, :1]
    department = (body[:, 0] > 0).astype("int32") + (tags[:, 1] > 0).astype("int32")
    t, b, g = keras.Input((6,), name="title"), keras.Input((10,), name="body"), keras.Input((4,), name="tags")
    h = keras.layers.concatenate(
        [keras.layers.Dense(8, activation="relu")(t), keras.layers.Dense(8, activation="relu")(b), g]
    )
    model = keras.Model(
        {"title": t, "body": b, "tags": g},
        {
            "priority": keras.layers.Dense(1, name="priority")(h),
            "department": keras.layers.Dense(3, name="department")(h),
        },
    )
    model.compile(
        optimizer=ctx.optimizer(keras.optimizers.RMSprop(1e-3)),
        loss={"priority": "mse", "department": LOGITS},
        loss_weights={"priority": 1.0, "department": 0.2},
    )
    model.fit(
        {"title": title, "body": body, "tags": tags},
        {"priority": priority, "department": department},
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=ctx.callbacks(),
    )
    return model


class ActivityRegularization(keras.layers.Layer):
    """A layer that adds a loss on its inputs (``self.add_loss``), as in the subclassing guide."""

    def __init__(self, rate: float = 1e-2) -> None:
        super().__init__()
        self.rate = rate

    def call(self, inputs: Any) -> Any:
        self.add_loss(self.rate * keras.ops.mean(keras.ops.square(inputs)))
        return inputs


@pattern("keras-team/keras-io guides/making_new_layers_and_models_via_subclassing.py (add_loss)")
def custom_layer_add_loss(ctx: Ctx) -> Any:
    x, y = digits(96)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            ActivityRegularization(),
            keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(1e-3)),
        ]
    )
    model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


class MLPBlock(keras.Model):
    """A subclassed model (no Input): built by its first call, inside the first traced step."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.drop = keras.layers.Dropout(0.2)
        self.out = keras.layers.Dense(10)

    def call(self, x: Any, training: bool = False) -> Any:
        return self.out(self.drop(self.hidden(x), training=training))


@pattern("keras-team/keras-io guides/making_new_layers_and_models_via_subclassing.py (subclassed Model)")
def subclassed_model(ctx: Ctx) -> Any:
    x, y = digits(96)
    model = MLPBlock()
    model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io guides/transfer_learning.py (layer.trainable = False on part of a model)")
def frozen_head(ctx: Ctx) -> Any:
    # The output head keeps its (pretrained) weights: it receives no gradient and must not be reported.
    x, y = digits(96)
    head = keras.layers.Dense(10, name="head")
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"), head])
    head.trainable = False
    model.compile(loss=LOGITS, optimizer=ctx.optimizer(keras.optimizers.SGD(0.05)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model
