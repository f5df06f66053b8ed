"""Small, fast training runs that each reproduce one gradient pathology, for learning and for tests.

    gradwatch demo --scenario NAME

Every scenario trains on scikit-learn's digits (shipped with scikit-learn,
nothing is downloaded) and streams to a gradwatch server through a
``GradientMonitor``. ``nan_inputs`` and ``frozen_batchnorm`` use a hand-written
``tf.GradientTape`` loop (``monitor.watch``), as in the cases they recreate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scenario:
    name: str
    expected_alert: str | None  # the alert kind the scenario exists to show (None: none at all)
    story: str
    run: Callable[[dict[str, Any], int], Any]  # (GradientMonitor kwargs, steps) -> the trained model
    default_steps: int


def _digits(scale: float = 1.0 / 16.0) -> tuple[Any, Any]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x * scale).astype("float32"), y.astype("int32")


def _batches(x: Any, y: Any, steps: int, batch: int = 32) -> Any:
    import numpy as np

    order = np.random.default_rng(0).permutation(len(x))
    for i in range(steps):
        idx = order[(i * batch) % (len(x) - batch) :][:batch]
        yield x[idx], y[idx]


def _fit(model: Any, optimizer: Any, x: Any, y: Any, steps: int, monitor: Any) -> Any:
    """``model.fit`` for exactly ``steps`` steps of 32 examples (epochs of at most one pass over the data)."""
    import keras
    import tensorflow as tf

    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    per_epoch = next(d for d in range(min(steps, len(x) // 32), 0, -1) if steps % d == 0)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).repeat().batch(32)
    model.fit(data, epochs=steps // per_epoch, steps_per_epoch=per_epoch, shuffle=False, verbose=0, callbacks=[monitor])
    monitor.close()  # the scenario is over: the run is finished, not idle
    return model


def _monitor(kwargs: dict[str, Any], **overrides: Any) -> Any:
    from gradwatch import GradientMonitor

    return GradientMonitor(**{**kwargs, **overrides})


# --------------------------------------------------------------------------- model.fit scenarios


def healthy(kwargs: dict[str, Any], steps: int) -> Any:
    """He-initialised ReLU MLP with BatchNorm and Adam: what a well-behaved run looks like."""
    import keras

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", kernel_initializer="he_normal", name="dense_in"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal", name="dense_mid"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="healthy_mlp",
    )
    return _fit(model, keras.optimizers.Adam(1e-3), x, y, steps, _monitor(kwargs, probe_data=x[:256], probe_every=50))


def exploding(kwargs: dict[str, Any], steps: int) -> Any:
    """A learning-rate warm-up that never stops climbing: gradient norms grow, then turn NaN."""
    import keras

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(64, activation="relu", name=f"dense_{i}") for i in range(4)]
        + [keras.layers.Dense(10, name="logits")],
        name="exploding_mlp",
    )
    # lr x1.06 per step: 1e-3 at step 0, ~1 by step 120, diverging soon after.
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=1, decay_rate=1.06)
    return _fit(model, keras.optimizers.SGD(schedule, momentum=0.9), x, y, steps, _monitor(kwargs))


def vanishing(kwargs: dict[str, Any], steps: int) -> Any:
    """Ten sigmoid layers: the first layers' gradients are orders of magnitude below the last's."""
    import keras

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(64, activation="sigmoid", name=f"sigmoid_{i}") for i in range(10)]
        + [keras.layers.Dense(10, name="logits")],
        name="sigmoid_tower",
    )
    return _fit(model, keras.optimizers.SGD(0.01), x, y, steps, _monitor(kwargs))


def dying_relu(kwargs: dict[str, Any], steps: int) -> Any:
    """ReLU units whose bias starts far negative never fire: most of the layer is dead."""
    import keras

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                128, activation="relu", bias_initializer=keras.initializers.Constant(-2.0), name="dense_dead"
            ),
            keras.layers.Dense(64, activation="relu", name="dense_ok"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="dying_relu_mlp",
    )
    return _fit(model, keras.optimizers.SGD(0.05), x, y, steps, _monitor(kwargs, probe_data=x[:256], probe_every=20))


# --------------------------------------------------------------------------- hand-written loops


def _loop(model: Any, optimizer: Any, batches: Any, monitor: Any, training: bool) -> Any:
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with monitor.watch(model, optimizer) as watch:

        def step(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=training))
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss, inputs=(xb, yb))

        compiled_step = tf.function(step)
        for xb, yb in batches:
            compiled_step(xb, yb)
            if watch.stop_requested:
                break
    monitor.close()
    return model


def nan_inputs(kwargs: dict[str, Any], steps: int) -> Any:
    """A few examples carry NaN features: one bad batch turns the first layer's weights into NaN."""
    import keras
    import numpy as np

    x, y = _digits()
    rng = np.random.default_rng(1)
    bad = rng.choice(len(x), size=6, replace=False)
    x[bad, rng.integers(0, 64, size=6)] = np.nan
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="dense_in"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="nan_inputs_mlp",
    )
    return _loop(model, keras.optimizers.SGD(0.05), _batches(x, y, steps), _monitor(kwargs), training=True)


def frozen_batchnorm(kwargs: dict[str, Any], steps: int) -> Any:
    """A hand-written loop that calls the model without training=True: BatchNorm never learns its statistics."""
    import keras

    x, y = _digits(scale=1.0)  # raw pixel values 0..16: BatchNorm is what would normalise them
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, name="dense_in"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Activation("relu", name="relu"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="frozen_bn_mlp",
    )
    monitor = _monitor(kwargs, probe_data=x[:256], probe_every=20)
    return _loop(model, keras.optimizers.SGD(1e-3, momentum=0.9), _batches(x, y, steps), monitor, training=False)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", None, healthy.__doc__ or "", healthy, 300),
        Scenario("exploding", "exploding_gradients", exploding.__doc__ or "", exploding, 200),
        Scenario("vanishing", "vanishing_gradients", vanishing.__doc__ or "", vanishing, 200),
        Scenario("nan_inputs", "nonfinite", nan_inputs.__doc__ or "", nan_inputs, 120),
        Scenario("frozen_batchnorm", "frozen_batchnorm", frozen_batchnorm.__doc__ or "", frozen_batchnorm, 150),
        Scenario("dying_relu", "dead_relu", dying_relu.__doc__ or "", dying_relu, 150),
    )
}
