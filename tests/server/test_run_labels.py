"""Run tags and notes (``PATCH /api/runs/{id}``) and the ``compare`` subscription, through a real server."""

from __future__ import annotations

import httpx
import pytest
from simtrainer import closed_with, drain, hello, open_browser, record, recv_until, run, send_steps, start_trainer
from waiting import wait_until

from gradwatch.protocol import MAX_COMPARE, CloseCode, dumps


def patch(srv, run_id: int, body, **kwargs) -> httpx.Response:
    kwargs.setdefault("headers", srv.headers)
    return httpx.patch(f"{srv.url}/api/runs/{run_id}", json=body, timeout=10, **kwargs)


def new_run(srv, name: str = "labelled") -> int:
    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(name))
        await ws.close()
        return run_id

    return run(body())


def settled(srv, run_id: int) -> dict:
    """The run once its trainer's disconnect is recorded (that moves ``updated_at``)."""
    return wait_until(
        lambda: (
            (d := httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json())["status"]
            == "disconnected"
            and d
        ),
        10,
        message=f"run {run_id} disconnected",
    )


def test_tags_and_note_are_stored_listed_and_pushed_to_pages(shared_server):
    srv = shared_server
    run_id = new_run(srv)
    before = settled(srv, run_id)["updated_at"]

    async def body():
        page = await open_browser(srv.browser_url, srv.token)
        await recv_until(page, "runs")
        r = patch(srv, run_id, {"tags": ["baseline", "lr=3e-4"], "note": "warm-up 500 steps"})
        pushed = await recv_until(page, "run")
        only_note = patch(srv, run_id, {"note": "second thoughts"})
        await page.close()
        return r, pushed, only_note

    r, pushed, only_note = run(body())
    assert r.status_code == 200, r.text
    assert (r.json()["tags"], r.json()["note"]) == (["baseline", "lr=3e-4"], "warm-up 500 steps")
    assert pushed["run"]["id"] == run_id and pushed["run"]["tags"] == ["baseline", "lr=3e-4"]
    assert only_note.json()["tags"] == ["baseline", "lr=3e-4"]  # a field left out is kept
    listed = next(x for x in httpx.get(f"{srv.url}/api/runs", headers=srv.headers).json() if x["id"] == run_id)
    assert (listed["tags"], listed["note"]) == (["baseline", "lr=3e-4"], "second thoughts")
    detail = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers).json()
    assert detail["note"] == "second thoughts"
    assert detail["updated_at"] == before  # a label is not activity: the run list's "x s ago" stays
    cleared = patch(srv, run_id, {"tags": [], "note": ""}).json()
    assert (cleared["tags"], cleared["note"]) == ([], "")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "nothing to change"),
        ({"tags": "baseline"}, "tags: Input should be a valid list"),
        ({"tags": ["has space"]}, "tag 'has space' is not 1-40"),
        ({"tags": [""]}, "tag '' is not"),
        ({"tags": ["a", "b", "a"]}, "tags ['a'] appear more than once"),
        ({"tags": [7]}, "tags.0: Input should be a valid string (got 7)"),
        ({"tags": [f"t{i}" for i in range(17)]}, "at most 16"),
        ({"note": "x" * 2001}, "note: String should have at most 2000 characters"),
        ({"name": "renamed"}, "name: Extra inputs are not permitted"),
    ],
)
def test_bad_labels_are_422_naming_the_value(shared_server, body, needle):
    srv = shared_server
    run_id = new_run(srv, "bad-labels")
    r = patch(srv, run_id, body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


def test_labels_need_the_token_and_refuse_cross_site_cookies(shared_server):
    srv = shared_server
    run_id = new_run(srv, "guarded")
    assert patch(srv, run_id, {"note": "x"}, headers={}).status_code == 401
    cookie = {"gradwatch_token": srv.token}
    client = httpx.Client(cookies=cookie)
    cross = client.patch(
        f"{srv.url}/api/runs/{run_id}", json={"note": "evil"}, headers={"Sec-Fetch-Site": "cross-site"}, timeout=10
    )
    assert cross.status_code == 403
    same = client.patch(
        f"{srv.url}/api/runs/{run_id}",
        json={"note": "mine"},
        headers={"Sec-Fetch-Site": "same-origin", "Origin": srv.url},
        timeout=10,
    )
    assert same.status_code == 200 and same.json()["note"] == "mine"
    missing = patch(srv, 10**9, {"note": "x"})
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]


def test_labels_survive_a_restart(gradwatch_server):
    srv = gradwatch_server()
    run_id = new_run(srv, "kept")
    assert patch(srv, run_id, {"tags": ["keep"], "note": "across restarts"}).status_code == 200
    srv.restart()
    detail = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json()
    assert (detail["tags"], detail["note"]) == (["keep"], "across restarts")


def test_compare_streams_the_steps_of_several_runs(shared_server):
    srv = shared_server

    async def body():
        a, run_a = await start_trainer(srv.trainer_url, srv.token, hello("cmp-a"))
        b, run_b = await start_trainer(srv.trainer_url, srv.token, hello("cmp-b"))
        c, _ = await start_trainer(srv.trainer_url, srv.token, hello("cmp-c"))
        page = await open_browser(srv.browser_url, srv.token, max_queue=None)
        await recv_until(page, "runs")
        await page.send(dumps({"type": "subscribe", "run_id": run_a}))
        await page.send(dumps({"type": "compare", "run_ids": [run_a, run_b]}))
        await recv_until(page, "run")  # the subscription's run state
        for ws, step in ((a, 0), (b, 0), (c, 0)):
            await send_steps(ws, [record(step)])
        during = await drain(page, quiet=1.0)
        await page.send(dumps({"type": "compare", "run_ids": []}))
        for ws in (a, b, c):
            await send_steps(ws, [record(1)])
        after = await drain(page, quiet=1.0)
        for ws in (a, b, c):
            await ws.close()
        await page.close()
        return (run_a, run_b), during, after

    (run_a, run_b), during, after = run(body())
    steps = sorted((m["run_id"], m["records"][0]["step"]) for m in during if m["type"] == "steps")
    assert steps == [(run_a, 0), (run_b, 0)]  # run a once though subscribed and compared; not run c
    assert [(m["run_id"]) for m in after if m["type"] == "steps"] == [run_a]  # the comparison ended


def test_compare_more_than_the_limit_is_refused(shared_server):
    srv = shared_server

    async def body():
        page = await open_browser(srv.browser_url, srv.token)
        await recv_until(page, "runs")
        await page.send(dumps({"type": "compare", "run_ids": list(range(MAX_COMPARE + 1))}))
        return await closed_with(page)

    code, reason = run(body())
    assert code == CloseCode.BAD_MESSAGE and "run_ids" in reason
