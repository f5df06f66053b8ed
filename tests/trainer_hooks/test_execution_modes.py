"""steps_per_execution > 1 and mixed precision: every step reported, true (unscaled) gradient norms."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import pytest

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

from .test_monitor_integration import BATCH, Api, data, sequential


def test_steps_per_execution_reports_every_step(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    x, y = data(n=BATCH * 12)
    keras.utils.set_random_seed(0)
    model = sequential()
    model.compile(
        keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4
    )
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[GradientMonitor(server.url, server.token)])
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    assert m["step"] == list(range(24))
    assert len(set(m["loss"])) == 24  # 24 distinct steps, not the last of each execution repeated


@pytest.fixture
def mixed_precision() -> Any:
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_reports_unscaled_norms_and_clips_them(gradwatch_server: Any, mixed_precision: Any) -> None:
    server = gradwatch_server()
    x, y = data()
    keras.utils.set_random_seed(0)
    model = sequential()
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    scale = float(model.optimizer.initial_scale)
    mon = GradientMonitor(server.url, server.token, clip_threshold=0.5)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    norms = [decode_float(g) for g in m["global_norm"]]
    assert len(norms) == len(x) // BATCH
    finite = [g for g in norms if math.isfinite(g)]
    # Scaled gradients would be ~scale (32768) times larger: these are the true ones.
    assert finite and max(finite) < scale / 100
    for g, s in zip(m["global_norm"], m["clip_scale"]):
        g = decode_float(g)
        if math.isfinite(g):
            assert decode_float(s) == pytest.approx(min(1.0, 0.5 / g), rel=1e-3)
    # A step the loss scaler skipped is reported as skipped, never silently dropped.
    assert all(sk == (not math.isfinite(g)) for sk, g in zip(m["skipped"], norms))
    assert all(np.isfinite(w).all() for w in model.get_weights())
