"""The origin of a non-finite step, told from a replay of its batch: real Keras training, a real server.

Each test checks the origin text the run's ``nonfinite`` alert carries against what was actually
done to the batch: replayed (on which weights) or not, and why.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gradwatch import GradientMonitor

from .test_monitor_integration import BATCH, Api, data
from .test_xla import origin_evidence, overflowing


def fit(server: Any, model: keras.Model, x: Any, y: Any, name: str, **kwargs: Any) -> list[str]:
    """Fit one epoch with the monitor; the texts of every warning raised meanwhile."""
    mon = GradientMonitor(server=server.url, token=server.token, run_name=name, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[mon])
    assert mon.close()
    return [str(w.message) for w in caught]


def test_a_batch_replaced_before_its_replay_is_not_called_finite(shared_server: Any) -> None:
    """Steps 3, 4, 5 overflow inside one execution: step 3's kept batch is gone when the host looks."""
    x, y = data()
    x[3 * BATCH : 6 * BATCH, 0] = 1e4
    keras.utils.set_random_seed(1)
    model = overflowing()
    model.compile(
        keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=8
    )
    printed = fit(shared_server, model, x, y, "replaced-batch", guard_nonfinite=True)
    evidence = origin_evidence(Api(shared_server), "replaced-batch")
    assert evidence["origin_step"] == 3
    detail = evidence["origin_detail"]
    assert "not replayed" in detail and "later step's batch" in detail, detail
    assert "overflowed" not in detail and "output are finite" not in detail
    assert not [w for w in printed if "structure of `inputs`" in w]  # the replays print nothing


class Sqrt(keras.layers.Layer):
    """A custom layer that makes NaN from clean data (the square root of a negative activation)."""

    def call(self, x: Any) -> Any:
        return keras.ops.sqrt(x)


def test_a_nan_made_in_a_custom_layer_is_found_on_the_weights_before_the_step(shared_server: Any) -> None:
    x, y = data()
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), Sqrt(name="sqrt"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    printed = fit(shared_server, model, x, y, "custom-nan")  # no guard: the first step's update writes NaN
    assert not np.isfinite(model.layers[0].kernel.numpy()).all()
    evidence = origin_evidence(Api(shared_server), "custom-nan")
    assert (evidence["origin_step"], evidence["origin_source"]) == (0, "layer")
    assert evidence["origin_layer"].rsplit("/", 1)[-1] == "sqrt"
    assert not [w for w in printed if "gradwatch" in w or "structure of `inputs`" in w]


def test_a_watch_loop_given_no_inputs_does_not_claim_they_are_finite(shared_server: Any) -> None:
    x, y = data(n=4 * BATCH)
    x[2 * BATCH, 0] = np.nan
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="no-inputs")
    with mon.watch(model, optimizer) as watch:

        @tf.function
        def step(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)

        for i in range(4):
            step(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    assert mon.close()
    evidence = origin_evidence(Api(shared_server), "no-inputs")
    assert evidence["origin_step"] == 2 and evidence["origin_source"] == "unknown"
    assert "no inputs=" in evidence["origin_detail"] and "are finite" not in evidence["origin_detail"]
