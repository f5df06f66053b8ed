"""Text: TextVectorization + Embedding (sparse IndexedSlices gradients), masking RNNs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from harness import Ctx, pattern, token_texts


def _text_model(ctx: Ctx, optimizer: Any) -> Any:
    texts, labels = token_texts(128)
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=12)
    vectorize.adapt(texts)
    tokens = vectorize(texts).numpy()  # vectorised up front, as the example's dataset map does
    model = keras.Sequential(
        [
            keras.Input((12,), dtype="int64"),
            keras.layers.Embedding(20, 8),
            keras.layers.Conv1D(8, 3, activation="relu"),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(loss="binary_crossentropy", optimizer=ctx.optimizer(optimizer), metrics=["accuracy"])
    model.fit(tokens, labels, batch_size=32, epochs=2, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io examples/nlp/text_classification_from_scratch.py")
def text_classification(ctx: Ctx) -> Any:
    return _text_model(ctx, keras.optimizers.Adam(1e-2))


@pattern(
    "keras-team/keras-io examples/nlp/text_classification_from_scratch.py, with Adam(global_clipnorm)",
)
def text_global_clipnorm(ctx: Ctx) -> Any:
    return _text_model(ctx, keras.optimizers.Adam(1e-2, global_clipnorm=0.05))


@pattern("keras-team/keras-io guides/understanding_masking_and_padding.py (Masking layer before an LSTM)")
def masking_lstm(ctx: Ctx) -> Any:
    # Variable-length float sequences, zero-padded with keras.utils.pad_sequences; Masking skips the padding.
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((rng.integers(2, 9), 3)).astype("float32") for _ in range(96)]
    x = keras.utils.pad_sequences(seqs, maxlen=8, dtype="float32", padding="post")
    y = np.array([int(s[:, 0].sum() > 0) for s in seqs], dtype="int32")
    model = keras.Sequential(
        [keras.Input((8, 3)), keras.layers.Masking(0.0), keras.layers.LSTM(8), keras.layers.Dense(2)]
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=ctx.optimizer(keras.optimizers.Adam(1e-2)),
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


@pattern("keras-team/keras-io guides/understanding_masking_and_padding.py (Embedding(mask_zero=True) + GRU)")
def embedding_mask_zero_gru(ctx: Ctx) -> Any:
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, 30, size=rng.integers(2, 10)) for _ in range(96)]
    x = keras.utils.pad_sequences(seqs, maxlen=10, padding="post")
    y = np.array([int(s.mean() > 15) for s in seqs], dtype="int32")
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Embedding(30, 8, mask_zero=True), keras.layers.GRU(8), keras.layers.Dense(2)]
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=ctx.optimizer(keras.optimizers.Adam(1e-2)),
    )
    model.fit(tf.constant(x), y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model
