"""The loss stored for each step is that step's: a custom ``train_step`` tracking it with ``keras.metrics.Mean``.

keras-io's VAE computes its loss, applies the gradients and returns ``total_loss_tracker.result()``:
``logs["loss"]`` is then a running mean over the epoch. The oracle is that running mean itself, read
by a plain callback after every batch: the step's own loss is ``(k + 1) m_k - k m_(k-1)`` for the
k-th batch of an epoch (one ``update_state`` of a scalar per step).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

from .test_monitor_integration import BATCH, Api, data
from .test_xla import run_named


class Tracked(keras.Model):
    """A regression model whose train step only tracks its loss (keras-io's VAE pattern)."""

    def __init__(self, tracker_name: str) -> None:
        super().__init__()
        self.body = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        self.tracker = keras.metrics.Mean(name=tracker_name)

    def call(self, x: Any) -> Any:
        return self.body(x)

    @property
    def metrics(self) -> list[Any]:
        return [self.tracker]

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x)[:, 0] - tf.cast(y, tf.float32)))
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}


class RunningMeans(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.means: list[list[float]] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.means.append([])

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.means[-1].append(float(logs["loss"]))


def train(server: Any, tracker_name: str) -> tuple[dict[str, Any], RunningMeans]:
    x, y = data()
    keras.utils.set_random_seed(2)
    model = Tracked(tracker_name)
    model.compile(keras.optimizers.SGD(0.05))
    means = RunningMeans()
    name = f"tracked-{tracker_name}"
    mon = GradientMonitor(server=server.url, token=server.token, run_name=name)
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[means, mon])
    assert mon.close()
    api = Api(server)
    return api.get(f"/api/runs/{run_named(api, name)['id']}/metrics"), means


def test_the_step_loss_is_recovered_from_the_tracker_of_the_loss(shared_server: Any) -> None:
    metrics, means = train(shared_server, "total_loss")
    want: list[float] = []
    for epoch in means.means:
        want += [epoch[0]] + [(k + 1) * epoch[k] - k * epoch[k - 1] for k in range(1, len(epoch))]
    assert metrics["step"] == list(range(len(want)))
    np.testing.assert_allclose([decode_float(v) for v in metrics["loss"]], want, rtol=2e-4)
    assert not any(metrics["loss_is_mean"])


def test_only_a_running_mean_is_labelled_so_and_stamped_on_its_own_step(shared_server: Any) -> None:
    metrics, means = train(shared_server, "error")  # not named like the loss: its numbers are not taken
    running = [m for epoch in means.means for m in epoch]
    assert metrics["step"] == list(range(len(running)))
    assert all(metrics["loss_is_mean"])
    np.testing.assert_allclose([decode_float(v) for v in metrics["loss"]], running, rtol=1e-6)
