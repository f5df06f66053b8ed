"""Run tags and notes, the run-list filter and the comparison view, in real Chromium against a real server
with simulated trainers speaking the real protocol."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from waiting import wait_until

from .test_dashboard import VARIABLES, login, trainers  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def item(page: Any, run_id: int) -> Any:
    return page.locator(f"[data-testid=run-item][data-run-id='{run_id}']")


def visible_runs(page: Any) -> list[int]:
    return page.evaluate("[...document.querySelectorAll('[data-testid=run-item]')].map(li => +li.dataset.runId)")


def traces(page: Any, testid: str) -> list[dict[str, Any]]:
    return page.evaluate(f"""(document.querySelector('[data-testid={testid}]').data || [])
        .map(t => ({{name: t.name, n: t.x.length, last: t.x[t.x.length - 1]}}))""")


def test_tags_note_edit_and_filter(gradwatch_server: Any, trainers: Any, browser_page: Any) -> None:  # noqa: F811
    page = browser_page
    srv = gradwatch_server()
    a = trainers(srv, "resnet-baseline", n_steps=5)
    b = trainers(srv, "resnet-warmup", n_steps=5)
    c = trainers(srv, "mlp-small")
    login(page, srv)
    for t in (a, b, c):
        item(page, t.run_id).wait_for()

    # edit a's labels on the page
    item(page, a.run_id).locator("a").click()
    page.wait_for_function(f"window.gradwatch.runId === {a.run_id}")
    page.get_by_test_id("labels-edit").click()
    page.get_by_test_id("labels-tags").fill("bad!tag")
    page.get_by_test_id("labels-save").click()
    error = page.get_by_test_id("labels-error")
    error.wait_for()
    assert "422" in error.text_content() and "'bad!tag'" in error.text_content()
    page.get_by_test_id("labels-tags").fill("baseline, lr=1e-3")
    page.get_by_test_id("labels-note").fill("the reference run")
    page.get_by_test_id("labels-save").click()
    page.wait_for_function("document.querySelector('[data-testid=run-tags]').dataset.tags === 'baseline lr=1e-3'")
    assert page.get_by_test_id("run-note").text_content() == "the reference run"
    stored = httpx.get(f"{srv.url}/api/runs/{a.run_id}", headers=srv.headers).json()
    assert (stored["tags"], stored["note"]) == (["baseline", "lr=1e-3"], "the reference run")
    # another page's edit (REST) reaches this page's list through the `run` message
    httpx.patch(f"{srv.url}/api/runs/{c.run_id}", json={"tags": ["mlp"]}, headers=srv.headers).raise_for_status()
    page.wait_for_function(f"""document.querySelector("[data-run-id='{c.run_id}'] [data-testid=run-item-tags]")
        .dataset.tags === 'mlp'""")

    # filter by tag, name and status
    page.get_by_test_id("filter-tag").select_option("baseline")
    page.wait_for_function("document.querySelectorAll('[data-testid=run-item]').length === 1")
    assert visible_runs(page) == [a.run_id]
    page.get_by_test_id("filter-tag").select_option("")
    page.get_by_test_id("filter-name").fill("RESNET")
    page.wait_for_function("document.querySelectorAll('[data-testid=run-item]').length === 2")
    assert sorted(visible_runs(page)) == sorted([a.run_id, b.run_id])
    a.done.wait(15)
    b.done.wait(15)
    page.get_by_test_id("filter-name").fill("")
    page.get_by_test_id("filter-status").select_option("running")
    page.wait_for_function("document.querySelectorAll('[data-testid=run-item]').length === 1")
    assert visible_runs(page) == [c.run_id]
    page.get_by_test_id("filter-name").fill("nothing-like-this")
    page.get_by_test_id("runs-filtered").wait_for()
    assert page.gradwatch_problems == []


def test_compare_overlays_runs_and_keeps_updating_incrementally(
    gradwatch_server: Any,
    trainers: Any,  # noqa: F811
    browser_page: Any,
) -> None:
    page = browser_page
    srv = gradwatch_server()
    runs = [trainers(srv, f"cmp-{i}", first_step=10 * i, interval=0.05) for i in range(3)]
    finished = trainers(srv, "cmp-done", n_steps=30)
    finished.done.wait(15)
    metrics_calls: list[str] = []
    page.on("request", lambda r: metrics_calls.append(r.url) if "/metrics" in r.url else None)
    login(page, srv)
    ids = [t.run_id for t in runs] + [finished.run_id]
    for rid in ids:
        item(page, rid).wait_for()
    assert page.get_by_test_id("btn-compare").is_disabled()
    for rid in ids:
        item(page, rid).get_by_test_id("run-pick").check()
    calls_before = len(metrics_calls)
    page.get_by_test_id("btn-compare").click()
    page.get_by_test_id("compare-view").wait_for()
    page.wait_for_function("Object.keys(window.gradwatch.compare.lastSteps).length === 4")
    assert [li.get_attribute("data-run-id") for li in page.get_by_test_id("compare-run").all()] == [str(i) for i in ids]

    loss = traces(page, "cmp-loss")
    assert [t["name"] for t in loss] == ["cmp-0", "cmp-1", "cmp-2", "cmp-done"]
    assert loss[3]["n"] == 30 and loss[3]["last"] == 29  # the finished run's whole history
    for testid in ("cmp-lr", "cmp-gnorm", "cmp-vars"):
        assert len(traces(page, testid)) == 4
    assert traces(page, "cmp-vars")[0]["name"] == f"cmp-0 · {VARIABLES[0]}"

    # live runs keep growing in the overlay, from websocket pushes only
    start = page.evaluate("window.gradwatch.compare.lastSteps")
    live_start = {k: v for k, v in start.items() if k != str(finished.run_id)}
    page.wait_for_function(
        "(start) => Object.entries(start).every(([id, s]) => window.gradwatch.compare.lastSteps[id] >= s + 20)",
        arg=live_start,
    )

    def drawn() -> list[dict[str, Any]]:  # once the frame that draws them has run
        g = traces(page, "cmp-gnorm")
        return g if g and all(t["last"] >= start[str(ids[i])] + 20 for i, t in enumerate(g[:3])) else []

    grown = wait_until(drawn, 10, message="the grown traces drawn")
    for i, t in enumerate(grown[:3]):
        assert t["last"] >= start[str(ids[i])] + 20, (t, start)
    assert grown[3]["n"] == 30  # the finished run gets nothing new
    assert len(metrics_calls) - calls_before == 4, metrics_calls[calls_before:]  # one history fetch per run, ever
    # the overlay's x is the step: a run that started at step 20 starts there
    first_x = page.evaluate("document.querySelector('[data-testid=cmp-loss]').data[2].x[0]")
    assert first_x == 20

    # choose a second variable: a trace per run and variable
    page.get_by_test_id("compare-vars").select_option([VARIABLES[0], VARIABLES[4]])
    page.wait_for_function("document.querySelector('[data-testid=cmp-vars]').data.length === 8")
    assert f"cmp-1 · {VARIABLES[4]}" in [t["name"] for t in traces(page, "cmp-vars")]

    assert page.get_by_test_id("btn-compare").text_content() == "Compare 4"

    page.get_by_test_id("compare-close").click()
    page.wait_for_function("!window.gradwatch.compare.open")
    assert page.get_by_test_id("compare-view").is_hidden()
    # open again, then pick one run in the list: its own view replaces the comparison
    page.get_by_test_id("btn-compare").click()
    page.wait_for_function("Object.keys(window.gradwatch.compare.lastSteps).length === 4")
    item(page, ids[1]).locator("a").click()
    page.wait_for_function(f"window.gradwatch.runId === {ids[1]} && !window.gradwatch.compare.open")
    assert page.get_by_test_id("compare-view").is_hidden() and page.locator("#run-view").is_visible()
    assert page.gradwatch_problems == []


def test_compare_survives_a_server_restart_every_step_once(
    gradwatch_server: Any,
    trainers: Any,  # noqa: F811
    browser_page: Any,
) -> None:
    page = browser_page
    srv = gradwatch_server()
    first = [trainers(srv, f"restart-{i}", n_steps=40, interval=0.02) for i in range(2)]
    ids = [t.run_id for t in first]
    login(page, srv)
    for rid in ids:
        item(page, rid).get_by_test_id("run-pick").check()
    page.get_by_test_id("btn-compare").click()
    page.wait_for_function("(ids) => ids.every(id => window.gradwatch.compare.lastSteps[id] === 39)", arg=ids)
    for t in first:
        t.stop()

    srv.restart()  # SIGTERM, same port and database; the runs go on while the page backs off
    for i, rid in enumerate(ids):
        trainers(srv, f"restart-{i}", run_id=rid, first_step=40, n_steps=60, interval=0.02)
    page.wait_for_function("window.gradwatch.connected === true", timeout=30_000)
    page.wait_for_function(
        "(ids) => ids.every(id => window.gradwatch.compare.lastSteps[id] === 99)", arg=ids, timeout=30_000
    )
    wait_until(  # once the frame that draws them has run
        lambda: (
            page.evaluate("document.querySelector('[data-testid=cmp-gnorm]').data.map(t => t.x)")
            == [list(range(100))] * 2
        ),
        10,
        message="every step of both runs drawn exactly once after the reconnect",
    )
    problems = [p for p in page.gradwatch_problems if "ERR_CONNECTION_REFUSED" not in p]
    assert problems == [], problems


def test_at_most_eight_runs_are_picked(gradwatch_server: Any, trainers: Any, browser_page: Any) -> None:  # noqa: F811
    page = browser_page
    srv = gradwatch_server()
    ids = [trainers(srv, f"many-{i}", n_steps=2).run_id for i in range(9)]
    login(page, srv)
    for rid in ids[:8]:
        item(page, rid).get_by_test_id("run-pick").check()
    ninth = item(page, ids[8]).get_by_test_id("run-pick")
    assert ninth.is_disabled() and page.get_by_text("At most 8 runs.").is_visible()
    assert page.get_by_test_id("btn-compare").text_content() == "Compare 8"
    item(page, ids[0]).get_by_test_id("run-pick").uncheck()
    assert ninth.is_enabled()
    ninth.check()
    page.get_by_test_id("btn-compare").click()
    page.wait_for_function("Object.keys(window.gradwatch.compare.lastSteps).length === 8")
    assert sorted(page.evaluate("window.gradwatch.compare.runIds")) == sorted(ids[1:])
    assert page.gradwatch_problems == []
