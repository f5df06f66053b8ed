"""Keras Tuner: one run per trial, named after it, with its hyperparameters in the run's info.

The search is adapted from keras-io's "Getting started with KerasTuner"
(guides/keras_tuner/getting_started.py): a model built from ``hp.Int`` / ``hp.Choice`` /
``hp.Float``, a ``RandomSearch``, the callbacks passed to ``search``.
"""

from __future__ import annotations

from typing import Any

import httpx
import keras
import numpy as np
import pytest

from gradwatch import GradientMonitor

kt = pytest.importorskip("keras_tuner")


def build_model(hp: Any) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                hp.Int("units", min_value=8, max_value=32, step=8), activation=hp.Choice("act", ["relu", "tanh"])
            ),
            keras.layers.Dense(2),
        ]
    )
    lr = hp.Float("lr", min_value=1e-3, max_value=1e-1, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_one_run_per_trial_named_after_it_with_its_hyperparameters(shared_server: Any, tmp_path: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    tuner = kt.RandomSearch(
        build_model, objective="val_loss", max_trials=3, seed=0, directory=str(tmp_path), project_name="gw"
    )
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="tuner")
    tuner.search(x, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0, callbacks=[mon])

    api = httpx.Client(base_url=shared_server.url, headers=shared_server.headers, timeout=10)
    runs = {r["name"]: r for r in api.get("/api/runs").json() if r["name"].startswith("tuner")}
    trials = tuner.oracle.trials
    assert sorted(runs) == sorted(f"tuner · trial {t}" for t in trials)
    for trial_id, trial in trials.items():
        run = runs[f"tuner · trial {trial_id}"]
        detail = api.get(f"/api/runs/{run['id']}").json()
        assert detail["status"] == "finished"  # the trial's copy of the monitor trains no more
        assert detail["step"] == 2 * 3 - 1  # 96 training examples, batch 32, 2 epochs
        meta = detail["meta"]
        assert meta["tuner_trial"] == trial_id
        assert {k: meta[f"hp.{k}"] for k in trial.hyperparameters.values} == trial.hyperparameters.values
    assert mon.session is None  # the search's own monitor was only copied, never trained
