"""Rewind from the page (issue 19), nothing simulated: a real fit blows up on a NaN batch, the server pauses it
(``pause_on``), the page rewinds it to a kept snapshot with a lower learning rate, and it finishes healthy."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
import keras
import numpy as np
import pytest
from waiting import wait_until

from gradwatch import GradientMonitor

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

BATCH, STEPS, BAD = 8, 40, 10


class Training(threading.Thread):
    def __init__(self, server: Any) -> None:
        super().__init__(daemon=True, name="keras-fit")
        self.server = server
        self.monitor = GradientMonitor(
            server=server.url, token=server.token, run_name="rewind: blow-up", pause_on=("nonfinite",), snapshot_every=4
        )
        keras.utils.set_random_seed(0)
        self.model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
        )
        self.model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((BATCH * STEPS, 6)).astype("float32")
        y = x[:, :1].copy()
        x[BAD * BATCH : (BAD + 1) * BATCH] = np.nan
        monitor = self.monitor
        server = self.server

        def paused_already() -> bool:
            """The pause came before this hold and was applied (the run was paused and resumed meanwhile)."""
            api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
            runs = api.get("/api/runs").json()
            commands = api.get(f"/api/runs/{runs[0]['id']}/commands").json() if runs else []
            return any(c["type"] == "pause" and c["state"] == "applied" for c in commands)

        class Hold(keras.callbacks.Callback):
            """The fit may be faster than the alert's round trip: two steps after the bad one, wait for the
            pause, unless it already came (a quick round trip pauses the fit at the step before)."""

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                session = monitor.session
                if batch == BAD + 2 and session is not None:
                    wait_until(
                        lambda: session.control.has_pending or paused_already(), 60, message="the pause to arrive"
                    )

        try:
            self.model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[monitor, Hold()])
        except BaseException as e:  # surfaced by the test
            self.error = e


def test_page_rewinds_a_blown_up_run_which_then_finishes_healthy(gradwatch_server: Any, browser_page: Any) -> None:
    server = gradwatch_server()
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    training = Training(server)
    training.start()
    page = browser_page
    try:
        run = wait_until(
            lambda: (r := api.get("/api/runs").json()) and r[0]["status"] == "paused" and r[0],
            message="the run to blow up and pause",
        )
        page.goto(f"{server.url}/login?token={server.token}")
        page.get_by_test_id("run-item").first.click()
        select = page.get_by_test_id("rewind-step")
        page.wait_for_function(
            "[...document.querySelectorAll('#rewind-step option')].map(o => o.value).join() === '8,4,0'"
        )  # newest first; step 12's weights were NaN: no snapshot then
        select.select_option("8")
        page.get_by_test_id("rewind-with").check()
        page.get_by_test_id("clip-threshold").fill("5")
        page.get_by_test_id("lr-input").fill("0.005")
        page.get_by_test_id("rewind-apply").click()
        entry = page.get_by_test_id("command-entry").filter(has_text="rewind")
        entry.get_by_text(re.compile(r"applied at step \d+: rewound to the snapshot of step 8, lr 0.005")).wait_for()
        assert "clip ≤ 5" in entry.inner_text() and "lr → 0.005" in entry.inner_text()
        at = int(re.search(r"applied at step (\d+)", entry.inner_text()).group(1))  # type: ignore[union-attr]
        page.wait_for_function(  # the global-norm chart marks the rewind, just before its first step
            "(document.getElementById('chart-global-norm').layout?.shapes || [])"
            f".some((s) => s.name === 'rewind' && s.x0 === {at} - 0.5)"
        )
        page.get_by_test_id("btn-resume").click()
        resume = page.get_by_test_id("command-entry").filter(has_text="resume")
        resume.get_by_text(re.compile(r"applied at step \d+")).wait_for(timeout=60_000)
        training.join(60)
        assert not training.is_alive() and training.error is None, api.get(f"/api/runs/{run['id']}/commands").json()
        assert all(np.isfinite(w).all() for w in training.model.get_weights())
        assert float(training.model.optimizer.learning_rate.numpy()) == np.float32(0.005)
        detail = wait_until(
            lambda: (d := api.get(f"/api/runs/{run['id']}").json())["status"] == "idle" and d, message="the fit to end"
        )
        assert detail["clip"]["threshold"] == 5.0 and detail["lr"] == pytest.approx(0.005)  # float32 on the steps
        assert not page.gradwatch_problems, page.gradwatch_problems
    finally:
        if training.is_alive():
            training.model.stop_training = True
            if training.monitor.session is not None:
                training.monitor.session.control.finish()
            training.join(60)
        training.monitor.close(5)  # while the server is up (the run would otherwise end at interpreter exit)
