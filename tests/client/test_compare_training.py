"""Comparison with nothing simulated: two real Keras ``model.fit`` runs with ``GradientMonitor`` (one finished,
one still training) against a real ``gradwatch serve``, overlaid in real Chromium."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.demo import digits_data, pace_callback

from .test_compare import item, traces
from .test_dashboard import login

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def mlp(optimizer: Any) -> Any:
    # A small functional MLP compiled with a named optimizer and sparse categorical cross-entropy, after the
    # keras-io guide "Training & evaluation with the built-in methods" (guides/training_with_built_in_methods.py).
    import keras

    inputs = keras.Input(shape=(64,), name="digits")
    x = keras.layers.Dense(32, activation="relu", name="dense_1")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy())
    return model


def test_compare_a_finished_and_a_live_keras_run(gradwatch_server: Any, browser_page: Any) -> None:
    import keras

    srv = gradwatch_server()
    x, y = digits_data()
    done = GradientMonitor(server=srv.url, token=srv.token, run_name="adam 1e-3")
    mlp(keras.optimizers.Adam(learning_rate=1e-3)).fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[done])
    live_model = mlp(keras.optimizers.SGD(learning_rate=0.05))
    live = GradientMonitor(server=srv.url, token=srv.token, run_name="sgd 0.05")
    errors: list[BaseException] = []

    def train() -> None:
        try:
            live_model.fit(x, y, batch_size=64, epochs=10_000, verbose=0, callbacks=[live, pace_callback(30.0)])
        except BaseException as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=train, daemon=True, name="keras-fit-live")
    thread.start()
    page = browser_page
    try:
        login(page, srv)
        page.wait_for_function("window.gradwatch._debug.state.runs.size === 2")
        ids = sorted(page.evaluate("[...window.gradwatch._debug.state.runs.keys()]"))
        for rid in ids:
            item(page, rid).get_by_test_id("run-pick").check()
        page.get_by_test_id("btn-compare").click()
        page.wait_for_function("Object.keys(window.gradwatch.compare.lastSteps).length === 2")
        start = page.evaluate("window.gradwatch.compare.lastSteps")
        page.wait_for_function(f"window.gradwatch.compare.lastSteps[{ids[1]}] >= {start[str(ids[1])]} + 30")
        wait_until(  # the frame that draws them
            lambda: len(g := traces(page, "cmp-gnorm")) > 1 and g[1]["last"] >= start[str(ids[1])] + 30,
            10,
            message="the live run's trace drawn",
        )

        lr = page.evaluate("document.querySelector('[data-testid=cmp-lr]').data.map(t => [t.name, [...new Set(t.y)]])")
        assert lr == [["adam 1e-3", [pytest.approx(1e-3)]], ["sgd 0.05", [pytest.approx(0.05)]]]
        finished_steps = 2 * -(-len(x) // 64)
        gnorm = traces(page, "cmp-gnorm")
        assert gnorm[0]["n"] == finished_steps and gnorm[0]["last"] == finished_steps - 1
        assert gnorm[1]["last"] >= start[str(ids[1])] + 30
        assert [t["name"] for t in traces(page, "cmp-vars")] == [
            "adam 1e-3 · dense_1/kernel",
            "sgd 0.05 · dense_1/kernel",
        ]
        assert page.gradwatch_problems == []
    finally:
        live_model.stop_training = True
        thread.join(60)
        for monitor in (done, live):
            monitor.close(timeout=10)  # the runs end before the server does
    assert errors == []
