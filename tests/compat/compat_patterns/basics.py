"""Plain fit: the MNIST convnet, sample and class weights, steps_per_execution, run_eagerly, XLA fit."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from harness import Ctx, digits, pattern

SCCE = "sparse_categorical_crossentropy"


def _mlp() -> keras.Model:
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])


@pattern("keras-team/keras-io examples/vision/mnist_convnet.py", loss_per_step=True)
def mnist_convnet(ctx: Ctx) -> Any:
    # Conv2D -> MaxPooling -> Dropout -> Dense, Adam, fit with validation_split, on 8x8 digits.
    x, y = digits(160, flat=False)  # 128 to train on: equal batches, so each step's own loss can be derived
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss=SCCE, optimizer=ctx.optimizer(keras.optimizers.Adam()), metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=2, validation_split=0.2, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io guides/training_with_built_in_methods.py (class weights, then sample weights)")
def sample_and_class_weights(ctx: Ctx) -> Any:
    # Two fits with one callback continue one run: first class_weight, then a per-example sample_weight.
    x, y = digits(128)
    model = _mlp()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=ctx.optimizer(keras.optimizers.RMSprop(1e-3)),
    )
    class_weight = {c: (2.0 if c == 5 else 1.0) for c in range(10)}
    model.fit(x, y, batch_size=32, epochs=1, class_weight=class_weight, verbose=0, callbacks=ctx.callbacks())
    sample_weight = np.where(y == 3, 3.0, 1.0).astype("float32")
    model.fit(x, y, batch_size=32, epochs=1, sample_weight=sample_weight, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("https://keras.io/api/models/model_training_apis/ (compile steps_per_execution)")
def steps_per_execution(ctx: Ctx) -> Any:
    # Four train steps per call of the compiled function; every step must still be reported.
    x, y = digits(256)
    model = _mlp()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=ctx.optimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
        steps_per_execution=4,
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("https://keras.io/api/models/model_training_apis/ (compile run_eagerly, for debugging)")
def run_eagerly(ctx: Ctx) -> Any:
    x, y = digits(96)
    model = _mlp()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)),
        run_eagerly=True,
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("https://keras.io/api/models/model_training_apis/ (compile jit_compile=True: XLA, the GPU default)")
def xla_fit(ctx: Ctx) -> Any:
    x, y = digits(128)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)),
        jit_compile=True,
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model
