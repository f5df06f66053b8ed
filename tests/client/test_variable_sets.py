"""The page shows where a run's watched variables changed: real Keras (keras-io's fine-tuning recipe, one
monitor), a real server, real Chromium. The page is open on the run when the base is unfrozen."""

from __future__ import annotations

from typing import Any

import pytest

from ..trainer_hooks.test_one_run import HEAD_EPOCHS, STEPS_PER_EPOCH, TUNE_EPOCHS, Recipe
from .test_dashboard import login

pytestmark = [pytest.mark.browser]


def test_the_heatmap_has_no_cells_for_variables_before_they_were_watched(
    gradwatch_server: Any, browser_page: Any
) -> None:
    server = gradwatch_server()
    page = browser_page
    recipe = Recipe(server)
    recipe.head()
    head_steps = HEAD_EPOCHS * STEPS_PER_EPOCH
    login(page, server)
    page.get_by_test_id("run-item").first.click()
    page.wait_for_function(f"window.gradwatch.lastStep === {head_steps - 1}")
    assert page.evaluate("window.gradwatch._debug.state.store.V") == 2
    recipe.tune()  # the page hears of the new variables and then gets their steps live
    total = head_steps + TUNE_EPOCHS * STEPS_PER_EPOCH
    page.wait_for_function(f"(s => s && s.V === 6 && s.lastStep === {total - 1})(window.gradwatch._debug.state.store)")
    cells = page.evaluate("""(() => {
        const s = window.gradwatch._debug.state.store;
        return s.variables.map((name, v) => ({name, steps: s.c.step, gn: s.gn[v]}));
    })()""")
    for var in cells:
        watched = [g is not None for g in var["gn"]]
        if "head" in var["name"]:
            assert all(watched), var
        else:  # the base's: no cell while frozen, a value from the step it was unfrozen
            assert watched == [s >= head_steps for s in var["steps"]], var
    z = page.evaluate("document.querySelector('[data-testid=chart-heatmap]').data[0].z")
    assert any(row[0] is None for row in z) and all(row[-1] is not None for row in z)
    assert not page.gradwatch_problems, page.gradwatch_problems
