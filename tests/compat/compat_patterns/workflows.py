"""Workflows around fit: transfer learning then fine-tuning, EarlyStopping/ModelCheckpoint with reload,
two monitors in one process."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
from harness import Ctx, digits, pattern

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pattern(
    "keras-team/keras-io guides/transfer_learning.py (freeze the base, train the head, "
    "unfreeze, recompile with Adam(1e-5), fit again)",
)
def transfer_then_finetune(ctx: Ctx) -> Any:
    x, y = digits(96)
    base = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.BatchNormalization()], name="base"
    )
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(10)(base(inputs, training=False)))
    base.trainable = False
    model.compile(optimizer=ctx.optimizer(keras.optimizers.Adam()), loss=LOGITS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    base.trainable = True
    model.compile(optimizer=ctx.optimizer(keras.optimizers.Adam(1e-5)), loss=LOGITS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern(
    "keras-team/keras-io guides/training_with_built_in_methods.py (EarlyStopping, ModelCheckpoint, "
    "load_model and train on)"
)
def early_stopping_checkpoint_reload(ctx: Ctx) -> Any:
    x, y = digits(64)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)), loss=LOGITS)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "best.keras")
        # min_delta so large that no epoch "improves": training stops after patience + 1 epochs.
        stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=1)
        save = keras.callbacks.ModelCheckpoint(path, monitor="loss")
        model.fit(x, y, batch_size=16, epochs=10, verbose=0, callbacks=ctx.callbacks(stop, save))
        reloaded = keras.models.load_model(path)
    ctx.optimizer(reloaded.optimizer, key="reloaded")
    reloaded.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks(key="reloaded"))
    return [model, reloaded]


@pattern("keras-team/keras-io guides/training_with_built_in_methods.py (two models trained side by side)")
def two_monitors_one_process(ctx: Ctx) -> Any:
    x, y = digits(64)
    models = []
    for key in ("a", "b"):
        m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(10)])
        m.compile(optimizer=ctx.optimizer(keras.optimizers.SGD(0.05), key=key), loss=LOGITS)
        models.append(m)
    for _ in range(2):  # interleaved: a, b, a, b — each monitor continues its own run
        for key, m in zip(("a", "b"), models):
            m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks(key=key))
    return models
