"""The hand-written-loop hook: same statistics as model.fit, eagerly and inside tf.function."""

from __future__ import annotations

import threading
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradwatch import GradientMonitor

from .test_monitor_integration import BATCH, Api, data, sequential

STEPS = 6


def fresh_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return sequential()


def metrics_of_only_run(api: Api) -> dict[str, Any]:
    # The end of a fit or loop waits only a moment for delivery (fit() must not wait): poll, bounded.
    def delivered() -> dict[str, Any] | None:
        runs = api.get("/api/runs")
        if len(runs) != 1:
            return None
        m = api.get(f"/api/runs/{runs[0]['id']}/metrics")
        return m if len(m["step"]) == STEPS else None

    return dict(api.wait(delivered, desc=f"one run with {STEPS} steps"))


def fit_metrics(server: Any) -> dict[str, Any]:
    x, y = data(n=STEPS * BATCH)
    model = fresh_model()
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mon = GradientMonitor(server=server.url, token=server.token, clip_threshold=0.5)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[mon])
    return metrics_of_only_run(Api(server))


def loop_metrics(server: Any, compiled: bool) -> dict[str, Any]:
    x, y = data(n=STEPS * BATCH)
    model = fresh_model()
    optimizer = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=server.url, token=server.token, clip_threshold=0.5)
    with mon.watch(model, optimizer) as watch:

        def step(xb: Any, yb: Any) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)

        run_step = tf.function(step) if compiled else step
        for i in range(STEPS):
            run_step(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    return metrics_of_only_run(Api(server))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_loop_statistics_equal_fit(gradwatch_server: Any, compiled: bool) -> None:
    expected = fit_metrics(gradwatch_server())
    got = loop_metrics(gradwatch_server(), compiled)
    assert got["step"] == expected["step"] == list(range(STEPS))
    for key in ("loss", "global_norm", "clip_scale", "clip_threshold"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key)
    # Keras numbers layer names per process, so compare in model order.
    got_norms, expected_norms = list(got["grad_norm"].values()), list(expected["grad_norm"].values())
    assert len(got_norms) == len(expected_norms) == 6
    for g, e in zip(got_norms, expected_norms):
        np.testing.assert_allclose(g, e, rtol=1e-5)
    (got_bn,), (expected_bn,) = got["bn"].values(), expected["bn"].values()
    for field in ("moving_mean", "moving_variance"):
        # Sampled between steps, paced by time: compare the steps both sampled (the last one always).
        both = [(g, e) for g, e in zip(got_bn[field], expected_bn[field]) if g is not None and e is not None]
        assert both and got_bn[field][-1] is not None
        np.testing.assert_allclose(*zip(*both), rtol=1e-5, atol=1e-7, err_msg=field)


def test_stop_from_the_dashboard_ends_the_loop(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    api = Api(server)
    x, y = data()
    model = fresh_model()
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=server.url, token=server.token)
    posted = threading.Event()
    steps = 0
    with mon.watch(model, optimizer) as watch:
        for i in range(100_000):
            xb, yb = x[(i % 8) * BATCH : (i % 8 + 1) * BATCH], y[(i % 8) * BATCH : (i % 8 + 1) * BATCH]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            watch.apply_gradients(tape.gradient(loss, model.trainable_variables), model.trainable_variables, loss)
            steps += 1
            if steps == 5 and not posted.is_set():
                run = api.wait(lambda: api.get("/api/runs"), desc="run")[0]
                command_id = api.post_command(run["id"], type="stop")
                posted.set()
            if watch.stop_requested:
                break
    assert posted.is_set() and steps < 100_000
    assert api.wait_applied(run["id"], command_id)["state"] == "applied"
    assert api.get(f"/api/runs/{run['id']}")["status"] == "finished"


def test_a_loop_that_trains_a_subset_watches_that_subset(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    x, y = data(n=STEPS * BATCH)
    model = fresh_model()
    head = model.layers[-1].trainable_variables  # fine-tuning the last layer only
    optimizer = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=server.url, token=server.token)
    with mon.watch(model, optimizer) as watch:
        for i in range(STEPS):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[i * BATCH : (i + 1) * BATCH], model(x[i * BATCH : (i + 1) * BATCH], training=True))
            watch.apply_gradients(tape.gradient(loss, head), head, loss=loss)
    api = Api(server)
    metrics = metrics_of_only_run(api)
    detail = api.get(f"/api/runs/{api.only_run()['id']}")
    assert detail["variables"] == [v.path for v in head]  # no all-zero rows for the frozen layers
    assert all(n > 0 for series in metrics["grad_norm"].values() for n in series)
