"""End to end with nothing simulated: real `gradwatch serve`, real Keras `model.fit`
with `GradientMonitor`, real Chromium. Pausing and changing the clip threshold on
the page must act on the training run. Takes the README screenshot: into the test's temporary
folder, or into docs/dashboard.png with GRADWATCH_SCREENSHOT=docs/dashboard.png (a refresh on purpose;
a test run never dirties the clone).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.demo import build_model, digits_data, pace_callback

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


class Training(threading.Thread):
    """The demo's digits MLP, paced so the page has something to watch, until stopped."""

    def __init__(self, server: Any) -> None:
        super().__init__(daemon=True, name="keras-fit")
        self.monitor = GradientMonitor(
            server=server.url, token=server.token, run_name="e2e: digits MLP", clip_threshold=1.0
        )
        self.model = build_model()
        self.error: BaseException | None = None

    def run(self) -> None:
        x, y = digits_data()
        try:
            self.model.fit(x, y, batch_size=32, epochs=10_000, verbose=0, callbacks=[self.monitor, pace_callback(40.0)])
        except BaseException as e:  # surfaced by the test
            self.error = e

    def halt(self) -> None:
        self.model.stop_training = True
        if self.monitor.session is not None:
            self.monitor.session.control.finish()  # releases a paused loop
        self.join(60)


def test_page_drives_a_real_training_run(gradwatch_server: Any, browser_page: Any, tmp_path: Path) -> None:
    screenshot = (
        ROOT / os.environ["GRADWATCH_SCREENSHOT"]
        if "GRADWATCH_SCREENSHOT" in os.environ
        else (tmp_path / "dashboard.png")
    )
    server = gradwatch_server()
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    training = Training(server)
    training.start()
    page = browser_page
    try:
        run = wait_until(
            lambda: (runs := api.get("/api/runs").json()) and runs[0]["step"] is not None and runs[0],
            timeout=120,
            message="the run to stream",
        )  # a first trace under load takes its time
        page.goto(f"{server.url}/login?token={server.token}")
        page.get_by_test_id("run-item").first.click()
        page.wait_for_function("window.gradwatch.runId !== null && window.gradwatch.steps > 40")
        first = page.evaluate("window.gradwatch.lastStep")
        page.wait_for_function(f"window.gradwatch.lastStep > {first + 20}")  # live, not just backfilled
        assert "heatmap" in page.get_by_test_id("chart-heatmap").inner_html()
        # The update/weight ratio chart is filled on a run that trains (issue 18): one line per variable,
        # the values the server stored for them.
        chart = "document.querySelector('[data-testid=chart-update-ratio]')"
        page.locator("[data-testid=chart-update-ratio]").scroll_into_view_if_needed()
        n_vars = len(training.model.trainable_variables)
        page.wait_for_function(
            f"({chart}.data || []).length === {n_vars} && {chart}.data.every(t => t.y.some(v => v !== null && v > 0))"
        )
        shown = page.evaluate(f"{chart}.data.map(t => [t.name, Array.from(t.x), Array.from(t.y)])")
        stored = api.get(f"/api/runs/{run['id']}/metrics").json()
        name, xs, ys = shown[0]
        by_step = dict(zip(stored["step"], stored["update_ratio"][name]))
        pairs = [(by_step[x], y) for x, y in zip(xs, ys) if y is not None and x in by_step]
        assert pairs and all(a == pytest.approx(b, rel=1e-6) for a, b in pairs)

        # Pause from the page: the trainer stops stepping and confirms where.
        page.get_by_test_id("btn-pause").click()
        entry = page.get_by_test_id("command-entry").filter(has_text="pause")
        entry.get_by_text(re.compile(r"applied at step \d+")).wait_for()
        wait_until(lambda: api.get(f"/api/runs/{run['id']}").json()["status"] == "paused", message="paused status")
        held = api.get(f"/api/runs/{run['id']}").json()["step"]
        time.sleep(1.0)  # stays: an absence (no step) needs time to pass in which a step could have come
        assert api.get(f"/api/runs/{run['id']}").json()["step"] == held
        page.get_by_test_id("run-status").get_by_text("paused").wait_for()

        # Change the threshold while paused, resume, and see the trainer use it.
        page.get_by_test_id("clip-mode").select_option("global_norm")
        page.get_by_test_id("clip-threshold").fill("0.25")
        page.get_by_test_id("clip-apply").click()
        clip_entry = page.get_by_test_id("command-entry").filter(has_text="0.25")
        clip_entry.get_by_text(re.compile(r"applied at step \d+")).wait_for()
        applied = int(re.search(r"applied at step (\d+)", clip_entry.inner_text()).group(1))  # type: ignore[union-attr]
        assert applied == held + 1
        page.get_by_test_id("btn-resume").click()
        page.wait_for_function(f"window.gradwatch.lastStep > {applied + 60}")
        page.get_by_test_id("run-clip").get_by_text("0.25").wait_for()

        metrics = api.get(f"/api/runs/{run['id']}/metrics", params={"since_step": applied - 5}).json()
        by_step = dict(zip(metrics["step"], metrics["clip_threshold"]))
        assert by_step[applied - 1] == 1.0
        assert all(abs(t - 0.25) < 1e-6 for s, t in by_step.items() if s >= applied)
        assert not page.gradwatch_problems, page.gradwatch_problems

        # Charts below the fold are only redrawn when visible: show the whole page first.
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 1400, "height": height})
        page.wait_for_timeout(1500)  # stays: the charts below the fold redraw once visible (looks only)
        page.screenshot(path=str(screenshot), full_page=True, timeout=90_000)  # slow on a loaded machine
        assert screenshot.stat().st_size > 10_000  # a page, not a blank

        page.get_by_test_id("btn-stop").click()
        training.join(60)
        assert not training.is_alive() and training.error is None
        wait_until(lambda: api.get(f"/api/runs/{run['id']}").json()["status"] == "finished", message="finished status")
    finally:
        if training.is_alive():
            training.halt()
