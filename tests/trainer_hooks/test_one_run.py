"""One monitor, one run: keras-io's fine-tuning recipe (fit the head, unfreeze the base, recompile, fit
again) with the same monitor continues its run, and the run shows where the watched variables changed.

Adapted from keras-io's transfer-learning guide ("Fine-tuning": ``base_model.trainable = True``, then
``model.compile(optimizer=keras.optimizers.Adam(1e-5), ...)`` and ``fit`` again), on a small base.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import keras
import pandas as pd
import pytest

from gradwatch import GradientMonitor

from .test_monitor_integration import BATCH, Api, data

HEAD_EPOCHS, TUNE_EPOCHS = 2, 1
STEPS_PER_EPOCH = 128 // BATCH


class Recipe:
    """The two phases of the recipe on one model and one monitor: ``head()``, then ``tune()``."""

    def __init__(self, server: Any) -> None:
        keras.utils.set_random_seed(4)
        self.x, self.y = data()
        self.base = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.BatchNormalization()],
            name="base",
        )
        self.base.trainable = False
        inputs = keras.Input((8,))
        self.model = keras.Model(inputs, keras.layers.Dense(2, name="head")(self.base(inputs, training=False)))
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.monitor = GradientMonitor(server=server.url, token=server.token, run_name="finetune")

    def _fit(self, optimizer: Any, epochs: int) -> None:
        self.model.compile(optimizer, self.loss)
        self.model.fit(
            self.x, self.y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=[self.monitor]
        )

    def head(self) -> None:
        self._fit(keras.optimizers.Adam(1e-3), HEAD_EPOCHS)

    def tune(self) -> None:
        self.base.trainable = True
        self._fit(keras.optimizers.Adam(1e-5), TUNE_EPOCHS)
        assert self.monitor.close()


def recipe(server: Any) -> tuple[keras.Model, list[str]]:
    steps = Recipe(server)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps.head()
        steps.tune()
    return steps.model, [str(w.message) for w in caught if "gradwatch" in str(w.message)]


@pytest.fixture(scope="module")
def finetuned(shared_server: Any) -> tuple[Api, dict[str, Any], keras.Model]:
    model, said = recipe(shared_server)
    assert said == []
    api = Api(shared_server)
    (run,) = [r for r in api.get("/api/runs") if r["name"] == "finetune"]  # one run, not two
    return api, api.get(f"/api/runs/{run['id']}"), model


def test_the_recipe_is_one_run_whose_steps_go_on(finetuned: Any) -> None:
    api, run, _ = finetuned
    head_steps = HEAD_EPOCHS * STEPS_PER_EPOCH
    total = head_steps + TUNE_EPOCHS * STEPS_PER_EPOCH
    assert run["status"] == "finished" and run["step"] == total - 1
    metrics = api.get(f"/api/runs/{run['id']}/metrics")
    assert metrics["step"] == list(range(total))
    head = [v for v in run["variables"] if "head" in v]
    base = [v for v in run["variables"] if "base" in v or "dense" in v or "batch_normalization" in v]
    assert len(head) == 2 and len(base) == 4 and run["variables"][:2] == head  # the base's join the run
    assert run["variable_sets"] == [
        {"from_step": 0, "variables": [0, 1]},
        {"from_step": head_steps, "variables": [run["variables"].index(v) for v in _model_order(finetuned)]},
    ]
    for name in base:  # not watched while frozen: no value (never NaN), then measured
        series = metrics["grad_norm"][name]
        assert series[:head_steps] == [None] * head_steps
        assert all(isinstance(v, float) and v > 0 for v in series[head_steps:])
    for name in head:
        assert all(isinstance(v, float) and v > 0 for v in metrics["grad_norm"][name])
    small = api.get(f"/api/runs/{run['id']}/metrics", max_points=8)  # downsampled: still no NaN for a gap
    assert all(v is None or isinstance(v, float) for name in base for v in small["grad_norm"][name])
    assert any(v is None for v in small["grad_norm"][base[0]]) and not any(
        v is None for v in small["grad_norm"][head[0]]
    )


def _model_order(finetuned: Any) -> list[str]:
    model = finetuned[2]
    return [v.path for v in model.trainable_variables]


def test_the_export_has_no_value_where_a_variable_was_not_watched(finetuned: Any) -> None:
    api, run, _ = finetuned
    r = api.client.get(f"/api/runs/{run['id']}/export", params={"format": "csv"})
    r.raise_for_status()
    frame = pd.read_csv(io.StringIO(r.text))
    head_steps = HEAD_EPOCHS * STEPS_PER_EPOCH
    base = next(v for v in run["variables"] if "head" not in v)
    column = frame[f"grad_norm:{base}"]
    assert column[:head_steps].isna().all() and (column[head_steps:] > 0).all()
