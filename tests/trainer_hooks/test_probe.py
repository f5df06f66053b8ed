"""The activation probe on models people write: custom layers, subclassed models, and the callback's defaults.

The custom layer and the subclassed model follow keras-io's guide "Making new layers and models via
subclassing" (keras-team/keras-io, guides/making_new_layers_and_models_via_subclassing.py: a ``Layer``
that owns sublayers and a ``keras.Model`` subclass with its own ``call``); the code is our own.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from gradwatch.trainer_hooks.probe import Prober
from sklearn.datasets import load_digits

from gradwatch import GradientMonitor

from .test_monitor_integration import Api


def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()  # shipped with scikit-learn: works offline
    return (d.data / 16.0).astype("float32"), d.target.astype("int32")


class ResidualBlock(keras.layers.Layer):
    """A custom layer owning two ReLU sublayers, and one it never calls (built for a variant it is not in)."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(units, activation="relu", name="inner")
        self.outer = keras.layers.Dense(units, name="outer")
        self.act = keras.layers.ReLU(name="block_relu")
        self.unused = keras.layers.Dense(units, activation="relu", name="unused")

    def call(self, x: Any) -> Any:
        return self.act(x + self.outer(self.inner(x)))


def custom_layer_model() -> keras.Model:
    inp = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu", name="stem")(inp)
    h = ResidualBlock(32, name="block")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(h))


class Classifier(keras.Model):
    """A subclassed model: no symbolic graph to cut outputs from."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(32, activation="relu", name="hidden")
        self.norm = keras.layers.BatchNormalization(name="norm")
        self.head = keras.layers.Dense(10, name="head")

    def call(self, x: Any, training: bool = False) -> Any:
        return self.head(self.norm(self.hidden(x), training=training))


def fit(server: Any, model: keras.Model, name: str, epochs: int = 1, lr: float = 0.05, **kwargs: Any) -> dict[str, Any]:
    x, y = digits()
    if not model.compiled:  # a model compiled (and trained) before keeps its optimizer and step count
        model.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mon = GradientMonitor(server=server.url, token=server.token, run_name=name, **kwargs)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[mon])
    api = Api(server)
    run = next(r for r in api.get("/api/runs") if r["name"] == name)
    detail = api.get(f"/api/runs/{run['id']}")
    return {
        "detail": detail,
        "probe": api.get(f"/api/runs/{run['id']}/metrics")["probe"],
        "alerts": api.get(f"/api/runs/{run['id']}/alerts"),
    }


def test_a_custom_layer_is_probed_inside_and_only_the_unreachable_layer_is_skipped(shared_server: Any) -> None:
    keras.utils.set_random_seed(0)
    model = custom_layer_model()
    got = fit(shared_server, model, "custom-layer", probe_every=10)  # no probe_data: the training batches
    probed = set(got["detail"]["relu_layers"])
    assert {p.split("/")[-1] for p in probed} == {"stem", "inner", "block_relu"}  # nested ones too
    assert set(got["probe"]["dead_relu"]) == probed
    assert len(got["probe"]["step"]) == len(range(0, 57, 10))  # every 10th of 57 steps
    note = got["detail"]["meta"]["probe"]
    assert "skipped" in note and "unused" in note and "stem" not in note
    # The probe left the user's layers as it found them.
    assert all("call" not in vars(layer) for layer in model._flatten_layers())


def test_a_subclassed_model_is_probed_from_probe_data(shared_server: Any) -> None:
    keras.utils.set_random_seed(0)
    x, _ = digits()
    got = fit(shared_server, Classifier(), "subclassed", probe_data=x[:64], probe_every=10)
    assert [p.split("/")[-1] for p in got["detail"]["relu_layers"]] == ["hidden"]
    assert [k.split("/")[-1] for k in got["probe"]["bn_gap"]] == ["norm"]
    assert "probe" not in got["detail"]["meta"]


def test_a_subclassed_model_without_probe_data_says_the_probe_is_off(shared_server: Any) -> None:
    keras.utils.set_random_seed(0)
    got = fit(shared_server, Classifier(), "subclassed-default")
    assert got["detail"]["relu_layers"] == [] and got["probe"]["step"] == []
    assert "probe_data" in got["detail"]["meta"]["probe"]


def test_a_probe_pass_that_fails_is_reported_not_raised() -> None:
    keras.utils.set_random_seed(0)
    model = custom_layer_model()
    prober = Prober(model, np.zeros((4, 3), np.float32), [])  # the wrong feature width
    assert prober.run() == ({}, {}) and "failed" in prober.notes["probe"]
    assert all("call" not in vars(layer) for layer in model._flatten_layers())


# --------------------------------------------------------------------------- dead ReLU with the defaults


def mlp(name: str, bias: float = 0.0) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu", name="h1", bias_initializer=keras.initializers.Constant(bias)),
            keras.layers.Dense(64, activation="relu", name="h2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=name,
    )


def dead_layers(got: dict[str, Any]) -> list[str]:
    """The layers of the dead_relu alerts, in the order they were raised."""
    alerts = sorted((a for a in got["alerts"] if a["kind"] == "dead_relu"), key=lambda a: (a["step"], a["id"]))
    return [a["layer"].split("/")[-1] for a in alerts]


@pytest.mark.parametrize(
    ("case", "lr", "bias", "first_dead"),
    [
        # gradwatch/scenarios.py's dying_relu: a first layer whose bias starts far negative never fires
        # (and starves the next one, which dies after it)
        ("negative-bias", 0.05, -2.0, "h1"),
        # our own variant: a learning rate so large that every ReLU layer dies, the loss stuck at chance
        ("huge-lr", 2.0, 0.0, "h1"),
        ("healthy", 0.05, 0.0, None),
    ],
)
def test_dead_relu_is_raised_with_the_default_arguments(
    shared_server: Any, case: str, lr: float, bias: float, first_dead: str | None
) -> None:
    keras.utils.set_random_seed(0)
    got = fit(shared_server, mlp(f"relu-{case}", bias), f"dead-relu-{case}", epochs=4, lr=lr)  # 228 steps
    assert got["probe"]["step"] == [0, 100, 200]  # the default probe_every, on the training batches
    dead = dead_layers(got)
    if first_dead is None:
        assert dead == []
    else:
        # The probe names the first dead layer; the zero-gradient rule may name the deepest one first.
        assert first_dead in dead and set(dead) <= {"h1", "h2"}


def test_a_run_starting_mid_way_probes_its_first_step(shared_server: Any) -> None:
    """A model trained before (or resumed from a checkpoint) starts at step N, not a multiple of probe_every."""
    keras.utils.set_random_seed(0)
    x, y = digits()
    model = mlp("relu-later")
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # 57 steps without the monitor
    got = fit(shared_server, model, "probe-later", epochs=1)
    assert got["probe"]["step"] == [57, 100]
    assert "probe" not in got["detail"]["meta"]
