"""The gradient-flow heatmap groups a GAN's rows by optimizer (``meta.optimizer_groups`` of the hello).

The trainer side of that hello (a real GAN fitted with ``GradientMonitor``) is tested in
tests/trainer_hooks/test_multi_optimizer.py; here a websocket trainer sends the same hello.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from gradwatch.protocol import PROTOCOL_VERSION, TRAINER_PATH, dumps

pytestmark = [pytest.mark.browser]

D_VARS = ["discriminator/dense/kernel", "discriminator/dense/bias"]
G_VARS = ["generator/dense_1/kernel", "generator/dense_1/bias", "generator/dense_2/kernel"]


def record(step: int, n: int) -> dict[str, Any]:
    gn = [0.1 * (i + 1) for i in range(n)]
    return {
        "step": step, "epoch": 0, "time": time.time(), "loss": 1.0, "lr": 1e-3, "global_norm": sum(gn),
        "clip_mode": "global_norm", "clip_threshold": None, "clip_scale": 1.0, "clipped": False,
        "steps_per_sec": 10.0, "grad_norm": gn, "grad_nan": [0] * n, "grad_inf": [0] * n, "bn": [],
    }  # fmt: skip


def send_run(server: Any, name: str, variables: list[str], meta: dict[str, Any]) -> int:
    with connect(server.ws_url + TRAINER_PATH, additional_headers=server.headers, open_timeout=10) as ws:
        hello = {
            "type": "hello", "protocol": PROTOCOL_VERSION, "run_name": name, "variables": variables,
            "clip": {"mode": "global_norm", "threshold": None}, "meta": meta,
        }  # fmt: skip
        ws.send(json.dumps(hello))
        welcome = json.loads(ws.recv(timeout=10))
        ws.send(dumps({"type": "steps", "records": [record(s, len(variables)) for s in range(5)]}))
        ws.send(json.dumps({"type": "status", "state": "idle", "step": 4}))
        ws.send(json.dumps({"type": "mark", "id": 1}))  # answered once the server has handled every frame above
        while json.loads(ws.recv(timeout=10))["type"] != "marked":
            pass
        return int(welcome["run_id"])


def open_run(page: Any, server: Any, run_id: int) -> Any:
    page.goto(f"{server.url}/login?token={server.token}")
    page.wait_for_url(re.compile(re.escape(server.url) + r"/(#.*)?$"))
    page.goto(f"{server.url}/#run={run_id}")
    page.wait_for_function(
        "(() => { const d = document.querySelector('[data-testid=chart-heatmap]');"
        " return d && d.data && d.data[0].z.length > 0 && d.data[0].z[0].length === 5; })()"
    )
    return page.evaluate(
        "(() => { const d = document.querySelector('[data-testid=chart-heatmap]');"
        " return {groups: JSON.parse(d.dataset.groups), notes: (d.layout.annotations || []).map(a => [a.text, a.y]),"
        " rules: (d.layout.shapes || []).filter(s => s.xref === 'paper').map(s => s.y0)}; })()"
    )


def test_a_gans_heatmap_rows_are_grouped_by_optimizer(gradwatch_server: Any, browser_page: Any) -> None:
    srv = gradwatch_server()
    groups = json.dumps({"d": len(D_VARS), "g": len(G_VARS)})
    run_id = send_run(srv, "gan", D_VARS + G_VARS, {"optimizer_groups": groups})
    shown = open_run(browser_page, srv, run_id)
    assert shown["groups"] == [["d", 0, 2], ["g", 2, 5]]
    assert shown["notes"] == [["<b>d</b>", 0.5], ["<b>g</b>", 3]]  # each name centred on its band
    assert shown["rules"] == [1.5]  # one rule between the two bands

    # The controls offer the groups; a clip or learning-rate change can name one.
    page = browser_page
    assert page.locator("[data-testid=cmd-group] option").all_text_contents() == ["all", "d", "g"]
    page.select_option("[data-testid=cmd-group]", "g")
    page.fill("[data-testid=clip-threshold]", "0.5")
    page.click("[data-testid=clip-apply]")
    page.fill("[data-testid=lr-input]", "0.01")
    page.select_option("[data-testid=cmd-group]", "")
    page.click("[data-testid=lr-apply]")
    page.wait_for_function("document.querySelectorAll('[data-testid=command-log] li').length === 2")
    log = page.locator("[data-testid=command-log] li").all_text_contents()
    assert "(g)" in log[1] and "(g)" not in log[0] and "(d)" not in log[0]
    client = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=10)
    sent = client.get(f"/api/runs/{run_id}/commands").json()
    assert [(c["type"], c["group"]) for c in sent] == [("set_clip", "g"), ("set_lr", None)]

    # One optimizer (or a grouping that does not add up): no bands at all, no group to choose.
    plain = send_run(srv, "plain", D_VARS, {"optimizer_groups": json.dumps({"d": 1, "g": 5})})
    shown = open_run(browser_page, srv, plain)
    assert shown["groups"] == [] and shown["notes"] == [] and shown["rules"] == []
    assert page.locator("[data-testid=cmd-group]").is_hidden()
