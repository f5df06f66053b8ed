"""Alerts name what the model's layers actually do: real Keras fits against a real server.

* Fine-tuning as keras-io's transfer-learning guide intends it (keras-team/keras-io,
  guides/transfer_learning.py: the base unfrozen, its BatchNormalization kept in inference mode while
  gamma and beta train) is a choice, not the frozen-BatchNorm fault: no ``frozen_batchnorm``. The guide
  writes ``base_model(inputs, training=False)`` in a functional model; Keras 3's functional call passes
  the outer ``training=True`` on to the base, so a subclassed model's ``call`` is where the flag holds.
  The fault itself (a loop calling the model without ``training=True``) stays detected:
  ``tests/test_scenarios.py::test_frozen_batchnorm_in_a_loop_without_training_flag``.
* A tanh ``SimpleRNN`` whose units saturated passes no gradient, like a dead ReLU layer; the alert
  says saturated tanh units, not ReLUs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from gradwatch.trainer_hooks.lifecycle import flush_at_exit

from gradwatch import GradientMonitor

from .test_monitor_integration import Api
from .test_probe import digits, fit


class FineTune(keras.Model):
    """A pre-trained base under a new head; the base's BatchNormalization stays in inference mode."""

    def __init__(self, base: keras.Model) -> None:
        super().__init__()
        self.base = base
        self.head = keras.layers.Dense(10, name="new_head")

    def call(self, x: Any, training: bool = False) -> Any:
        return self.head(self.base(x, training=False))


def base_model() -> keras.Model:
    inp = keras.Input((64,))
    h = keras.layers.Dense(32, name="features")(inp)
    h = keras.layers.BatchNormalization(name="base_bn")(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(inp, keras.layers.Dense(10, name="old_head")(h), name="base")


def test_fine_tuning_with_the_base_in_inference_mode_raises_no_frozen_batchnorm(shared_server: Any) -> None:
    keras.utils.set_random_seed(0)
    x, y = digits()
    pretrained = base_model()
    pretrained.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pretrained.fit(x, y, batch_size=32, epochs=1, verbose=0)  # BatchNorm's moving statistics learn here
    base = keras.Model(pretrained.input, pretrained.layers[-2].output, name="base_features")
    bn = pretrained.get_layer("base_bn")
    before = bn.moving_mean.numpy().copy()
    model = FineTune(base)
    model.compile(keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    got = fit(shared_server, model, "fine-tune", epochs=3)  # 171 steps
    assert np.array_equal(bn.moving_mean.numpy(), before)  # inference mode indeed: the statistics never moved
    gamma = next(v for v in got["detail"]["variables"] if v.endswith("base_bn/gamma"))
    assert gamma and got["detail"]["bn_layers"]  # gamma trains and the layer is reported
    assert [a for a in got["alerts"] if a["kind"] == "frozen_batchnorm"] == []


def saturated_rnn(name: str) -> keras.Model:
    # Every weight positive and a bias of 20: each unit's input is at least 20, where tanh is exactly 1.0 in
    # float32 and its derivative exactly 0, so no gradient reaches the layer's weights.
    big = keras.initializers.Constant(20.0)
    return keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.SimpleRNN(
                16, name="rnn", kernel_initializer="ones", recurrent_initializer="ones", bias_initializer=big
            ),
            keras.layers.Dense(10, name="logits"),
        ],
        name=name,
    )


def test_a_saturated_tanh_rnn_is_named_saturated_not_dead_relu(shared_server: Any) -> None:
    keras.utils.set_random_seed(0)
    x, y = digits()
    model = saturated_rnn("saturated-rnn")
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="saturated-rnn")
    model.fit(x.reshape(-1, 8, 8), y, batch_size=32, epochs=1, verbose=0, callbacks=[mon])
    flush_at_exit(timeout=5.0)
    api = Api(shared_server)
    run = next(r for r in api.get("/api/runs") if r["name"] == "saturated-rnn")
    alerts = api.wait(
        lambda: [a for a in api.get(f"/api/runs/{run['id']}/alerts") if a["kind"] == "dead_relu"],
        desc="the dead_relu alert",
    )
    (alert,) = alerts
    assert "rnn" in alert["layer"] and alert["evidence"]["activation"] == "tanh"
    assert "Its tanh units are saturated" in alert["message"] and "ReLU" not in alert["message"]
    assert any("LayerNormalization" in r for r in alert["remedies"])
    assert not any("LeakyReLU" in r for r in alert["remedies"])
