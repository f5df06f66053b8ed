"""The zoo's building blocks: data (scikit-learn digits, nothing downloaded) and small models.

Shapes are written from public Keras patterns, not copied:
- MLP and CNN: keras-io examples/vision/mnist_convnet.py (Conv2D + pooling + Dense head);
- residual CNN: the add-a-shortcut block of keras-io guides/functional_api.py ("a toy ResNet model");
- LSTM/GRU: keras-io guides/working_with_rnns.py (an RNN layer over a sequence, Dense head);
- transformer: the block of keras-io examples/nlp/text_classification_with_transformer.py
  (MultiHeadAttention, residual + LayerNormalization, feed-forward, pooled head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ARCHS = ("mlp", "cnn", "rescnn", "lstm", "gru", "transformer")


@dataclass(frozen=True)
class Data:
    x: np.ndarray
    y: np.ndarray  # int labels 0..9


def digits(arch: str, n: int, raw: bool = False, seed: int = 0) -> Data:
    """``n`` digits shaped for ``arch``: (n, 64) for the MLP, 8x8x1 images, or 8 rows of 8 as a sequence."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))[:n] if n <= len(x) else rng.integers(0, len(x), n)
    x = x[order].astype("float32") * (1.0 if raw else 1.0 / 16.0)
    shape = {"mlp": (64,), "cnn": (8, 8, 1), "rescnn": (8, 8, 1)}.get(arch, (8, 8))
    return Data(x.reshape((len(x), *shape)), y[order].astype("int32"))


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    width: int
    depth: int
    activation: str = "relu"
    kernel_init: Any = "glorot_uniform"
    bias_init: Any = "zeros"
    batchnorm: bool = False
    bn_momentum: float = 0.99
    exp_layer: bool = False  # a Dense with exponential activation (for overflow)
    frozen_first: bool = False  # fine-tuning: the first layers are not trainable
    bn_frozen_on_purpose: bool = False  # BatchNormalization layers with trainable=False


def build(spec: ModelSpec, model_cls: Any = None) -> Any:
    """A functional model (of ``model_cls``, e.g. one with a custom ``train_step``) ending in 10 float32 logits."""
    import keras

    inputs = keras.Input(_input_shape(spec.arch))
    h = _body(spec, inputs)
    outputs = keras.layers.Dense(10, dtype="float32", name="logits")(h)
    model = (model_cls or keras.Model)(inputs=inputs, outputs=outputs, name=f"zoo_{spec.arch}")
    if spec.frozen_first:  # the first layer after the input, as when fine-tuning on top of a frozen base
        model.layers[1].trainable = False
    return model


def _input_shape(arch: str) -> tuple[int, ...]:
    return {"mlp": (64,), "cnn": (8, 8, 1), "rescnn": (8, 8, 1)}.get(arch, (8, 8))


def _bn(spec: ModelSpec, h: Any, name: str) -> Any:
    import keras

    bn = keras.layers.BatchNormalization(momentum=spec.bn_momentum, name=name)
    if spec.bn_frozen_on_purpose:
        bn.trainable = False
    return bn(h)


def _body(spec: ModelSpec, x: Any) -> Any:
    import keras

    L = keras.layers
    w, act = spec.width, spec.activation
    kw = {"kernel_initializer": spec.kernel_init, "bias_initializer": spec.bias_init}
    h = x
    if spec.arch == "mlp":
        for i in range(spec.depth):
            h = L.Dense(w, activation=None if spec.batchnorm else act, name=f"dense_{i}", **kw)(h)
            if spec.batchnorm:
                h = L.Activation(act, name=f"act_{i}")(_bn(spec, h, f"bn_{i}"))
        if spec.exp_layer:
            h = L.Dense(w, activation="exponential", name="dense_exp")(h)
        return h
    if spec.arch == "cnn":
        for i in range(spec.depth):
            h = L.Conv2D(w, 3, padding="same", activation=None if spec.batchnorm else act, name=f"conv_{i}", **kw)(h)
            if spec.batchnorm:
                h = L.Activation(act, name=f"act_{i}")(_bn(spec, h, f"bn_{i}"))
            if i == 0:
                h = L.MaxPooling2D(2, name="pool")(h)
        return L.Flatten(name="flatten")(h)
    if spec.arch == "rescnn":
        h = L.Conv2D(w, 3, padding="same", activation=act, name="stem", **kw)(h)
        for i in range(spec.depth):
            r = L.Conv2D(w, 3, padding="same", name=f"res{i}_a", **kw)(h)
            r = _bn(spec, r, f"res{i}_bn") if spec.batchnorm else r
            r = L.Activation(act, name=f"res{i}_act")(r)
            r = L.Conv2D(w, 3, padding="same", name=f"res{i}_b", **kw)(r)
            h = L.Activation(act, name=f"res{i}_out")(L.Add(name=f"res{i}_add")([h, r]))
        return L.GlobalAveragePooling2D(name="gap")(h)
    if spec.arch in ("lstm", "gru"):
        cell = L.LSTM if spec.arch == "lstm" else L.GRU
        for i in range(spec.depth):
            h = cell(w, return_sequences=i < spec.depth - 1, name=f"{spec.arch}_{i}")(h)
        return h
    if spec.arch == "transformer":
        h = L.Dense(w, name="embed")(h)
        for i in range(spec.depth):
            a = L.MultiHeadAttention(num_heads=2, key_dim=max(4, w // 2), name=f"mha_{i}")(h, h)
            h = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}_a")(L.Add()([h, a]))
            f = L.Dense(2 * w, activation="relu", name=f"ffn{i}_a")(h)
            f = L.Dense(w, name=f"ffn{i}_b")(f)
            h = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}_b")(L.Add()([h, f]))
        return L.GlobalAveragePooling1D(name="pool")(h)
    raise ValueError(f"unknown arch {spec.arch!r}; choose from {ARCHS}")


def optimizer(name: str, lr: Any, clip: dict[str, float] | None = None) -> Any:
    import keras

    kw = dict(clip or {})
    if name == "sgd":
        return keras.optimizers.SGD(lr, **kw)
    if name == "momentum":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **kw)
    if name == "adam":
        return keras.optimizers.Adam(lr, **kw)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, **kw)
    raise ValueError(f"unknown optimizer {name!r}")


def runaway_schedule(lr0: float, onset: int, growth: float, jump: float = 1.0) -> Any:
    """lr0 until ``onset``, then ``jump`` x lr0 growing by ``growth`` per step: a learning rate that runs away."""
    import keras
    import tensorflow as tf

    class Runaway(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
        def __call__(self, step: Any) -> Any:
            k = tf.maximum(tf.cast(step, tf.float32) - float(onset), 0.0)
            factor = tf.where(k > 0, jump * tf.pow(growth, k), 1.0)
            return lr0 * factor

        def get_config(self) -> dict[str, Any]:
            return {}

    return Runaway()


def warmup_schedule(peak: float, warmup: int) -> Any:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then a gentle cosine decay."""
    import keras

    return keras.optimizers.schedules.CosineDecay(peak / 50, decay_steps=2000, warmup_target=peak, warmup_steps=warmup)
