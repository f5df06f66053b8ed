"""The page shows a real monitor's run as idle between fits, interrupted after a Ctrl-C, finished at the end.

Real ``gradwatch serve``, real Keras ``fit`` with ``GradientMonitor``, real Chromium.
"""

from __future__ import annotations

import re
from typing import Any

import keras
import numpy as np
import pytest

from gradwatch import GradientMonitor

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


class CtrlC(keras.callbacks.Callback):
    """The notebook's "interrupt kernel" arriving after the third batch."""

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch == 2:
            raise KeyboardInterrupt


def badge(page: Any, expected: str) -> None:
    head = page.get_by_test_id("run-status")
    page.wait_for_function(
        f"document.querySelector('[data-testid=run-status]').textContent === '{expected}'", timeout=20_000
    )
    assert head.get_attribute("class") == f"badge badge-{expected}"
    item = page.get_by_test_id("run-item-status").first
    page.wait_for_function(
        f"document.querySelector('[data-testid=run-item-status]').textContent === '{expected}'", timeout=20_000
    )
    assert item.get_attribute("title") == head.get_attribute("title") != ""


def test_idle_interrupted_and_finished_on_the_page(gradwatch_server: Any, browser_page: Any) -> None:
    srv = gradwatch_server()
    page = browser_page
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    mon = GradientMonitor(server=srv.url, token=srv.token, run_name="status on the page")

    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[mon])
    page.goto(f"{srv.url}/login?token={srv.token}")
    page.wait_for_url(re.compile(re.escape(srv.url) + r"/(#.*)?$"))
    page.get_by_test_id("run-item-status").first.wait_for()
    page.locator(".run-link").first.click()
    badge(page, "idle")
    assert "next one continues this run" in (page.get_by_test_id("run-status").get_attribute("title") or "")

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[mon, CtrlC()])
    badge(page, "interrupted")

    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[mon])
    badge(page, "idle")
    mon.close(5)
    badge(page, "finished")
    assert page.gradwatch_problems == []
