"""Alerts and the new protocol pieces through a real ``gradwatch serve`` and a simulated trainer."""

from __future__ import annotations

import httpx
from simtrainer import drain, hello, open_browser, record, recv_json, recv_until, run, send_steps, start_trainer, taken

from gradwatch.protocol import AlertView, dumps, parse_page_message


def get(srv, path: str):
    r = httpx.get(srv.url + path, headers=srv.headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def patch(srv, path: str, body) -> httpx.Response:
    return httpx.patch(srv.url + path, json=body, headers=srv.headers, timeout=10)


def nan_record(step: int) -> dict:
    return record(
        step,
        global_norm="NaN",
        grad_norm=[1.0, "NaN", "NaN"],
        grad_nan=[0, 3, 1],
        loss="NaN",
        loss_nonfinite=True,
        skipped=True,
    )


def test_alert_pushed_to_every_viewer_stored_and_origin_attached(shared_server):
    srv = shared_server

    async def body():
        browser = await open_browser(srv.browser_url, srv.token)
        await recv_until(browser, "runs")  # not subscribed to anything
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("nan-run", guard_nonfinite=True))
        await send_steps(ws, [record(s) for s in range(5)] + [nan_record(5), nan_record(6)])
        pushed = await recv_until(browser, "alert", run_id=run_id)
        await ws.send(
            dumps({"type": "nonfinite_origin", "step": 5, "source": "labels", "layer": None, "detail": "2 NaN labels"})
        )
        updated = await recv_until(browser, "alert", run_id=run_id)
        alerts = get(srv, f"/api/runs/{run_id}/alerts")
        runs = get(srv, "/api/runs")
        await ws.close()
        await browser.close()
        return run_id, pushed, updated, alerts, runs

    run_id, pushed, updated, alerts, runs = run(body())
    assert parse_page_message(dumps(updated)).type == "alert"  # a typed page message
    a = pushed["alert"]
    assert set(a) == set(AlertView.model_fields) and (a["state"], a["resolved_step"]) == ("open", None)
    assert (a["kind"], a["severity"], a["step"], a["layer"], a["count"]) == (
        "nonfinite",
        "critical",
        5,
        "dense/bias",
        1,
    )
    assert a["layers"] == ["dense/bias", "out/kernel"] and a["last_step"] == 6
    assert "skipped 2 steps" in a["message"] and a["remedies"]
    u = updated["alert"]
    assert u["id"] == a["id"] and u["evidence"]["origin_source"] == "labels" and "labels" in u["message"]
    assert [x["id"] for x in alerts] == [a["id"]] and alerts[0]["message"] == u["message"]
    assert next(r for r in runs if r["id"] == run_id)["alerts"] == {"info": 0, "warning": 0, "critical": 1}


def test_rules_mute_tune_and_refusals(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        rules = get(srv, f"/api/runs/{run_id}/alert-rules")
        muted = patch(srv, f"/api/runs/{run_id}/alert-rules/nonfinite", {"muted": True})
        tuned = patch(
            srv, f"/api/runs/{run_id}/alert-rules/clip_saturated", {"params": {"window": 10, "fraction": 0.5}}
        )
        refusals = [
            patch(srv, f"/api/runs/{run_id}/alert-rules/explosions", {"muted": True}),
            patch(srv, f"/api/runs/{run_id}/alert-rules/clip_saturated", {"params": {"windows": 3}}),
            patch(srv, f"/api/runs/{run_id}/alert-rules/clip_saturated", {"params": {"fraction": 2}}),
            patch(srv, f"/api/runs/{run_id}/alert-rules/clip_saturated", {"params": {"window": 2.5}}),
            patch(srv, f"/api/runs/{run_id}/alert-rules/clip_saturated", {"muted": "yes"}),
            patch(srv, "/api/runs/999999/alert-rules/clip_saturated", {"muted": True}),
        ]
        await send_steps(
            ws, [nan_record(0)] + [record(s, clipped=True, clip_threshold=1.0, clip_scale=0.1) for s in range(1, 12)]
        )
        await taken(ws)
        alerts = get(srv, f"/api/runs/{run_id}/alerts")
        after = get(srv, f"/api/runs/{run_id}/alert-rules")
        await ws.close()
        return rules, muted, tuned, refusals, alerts, after

    rules, muted, tuned, refusals, alerts, after = run(body())
    assert set(rules) == {
        "exploding_gradients",
        "vanishing_gradients",
        "nonfinite",
        "dead_relu",
        "frozen_batchnorm",
        "clip_saturated",
        "diverging",
    }
    assert rules["clip_saturated"] == {"muted": False, "params": {"fraction": 0.9, "window": 100, "max_scale": 0.2}}
    assert rules["exploding_gradients"]["params"]["spike_factor"] == 10.0
    assert muted.status_code == 200 and muted.json()["muted"] is True
    assert tuned.json() == {"muted": False, "params": {"fraction": 0.5, "window": 10, "max_scale": 0.2}}
    codes = [r.status_code for r in refusals]
    assert codes == [404, 422, 422, 422, 422, 404], [r.text for r in refusals]
    assert "explosions" in refusals[0].json()["detail"]
    assert "windows" in refusals[1].json()["detail"] and "fraction" in refusals[2].json()["detail"]
    assert [a["kind"] for a in alerts] == ["clip_saturated"] and alerts[0]["step"] == 9  # nonfinite muted
    assert after["nonfinite"]["muted"] is True and after["clip_saturated"]["params"]["window"] == 10


def test_rule_change_reaches_every_page_watching_the_run(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        watching = await open_browser(srv.browser_url, srv.token)
        elsewhere = await open_browser(srv.browser_url, srv.token)
        for b in (watching, elsewhere):
            await recv_until(b, "runs")
        await watching.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(watching, "run")  # the subscription is in effect
        assert (
            patch(srv, f"/api/runs/{run_id}/alert-rules/dead_relu", {"params": {"threshold": 0.3}}).status_code == 200
        )
        pushed = await recv_until(watching, "alert_rules")
        stray = [m["type"] for m in await drain(elsewhere)]
        for c in (ws, watching, elsewhere):
            await c.close()
        return run_id, pushed, stray

    run_id, pushed, stray = run(body())
    assert parse_page_message(dumps(pushed)).type == "alert_rules"
    assert pushed == {
        "type": "alert_rules",
        "run_id": run_id,
        "rules": {"dead_relu": {"muted": False, "params": {"sustain": 2, "threshold": 0.3, "zero_sustain": 20}}},
    }
    assert "alert_rules" not in stray  # only pages watching that run


def audit_of(srv, run_id: int) -> tuple[dict, list[dict], list[dict]]:
    """What an automatic command leaves to audit: the run, its commands, its alerts."""
    base = f"/api/runs/{run_id}"
    return get(srv, base), get(srv, f"{base}/commands"), get(srv, f"{base}/alerts")


def test_pause_on_issues_an_audited_pause(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("auto-pause", pause_on=["nonfinite"]))
        await send_steps(ws, [record(0), nan_record(1)])
        cmd = await recv_until(ws, "command")
        audit = audit_of(srv, run_id)
        await ws.close()
        return cmd, *audit

    cmd, detail, commands, alerts = run(body())
    assert cmd["command"] == {"type": "pause"}
    assert detail["pause_on"] == ["nonfinite"]
    (c,) = commands
    assert c["type"] == "pause" and c["origin"] == f"auto: nonfinite alert #{alerts[0]['id']}" and c["id"] == cmd["id"]


def test_rewind_on_issues_an_audited_auto_rewind_instead_of_a_pause(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(
            srv.trainer_url, srv.token, hello("auto-rewind", pause_on=["nonfinite"], rewind_on=["nonfinite"])
        )
        await ws.send(dumps({"type": "snapshots", "steps": [0, 4]}))
        await send_steps(ws, [record(s) for s in range(6)] + [nan_record(6)])
        cmd = await recv_until(ws, "command")
        await ws.send(
            dumps(
                {
                    "type": "ack",
                    "id": cmd["id"],
                    "state": "applied",
                    "applied_step": 8,
                    "detail": "rewound to the snapshot of step 4, lr 0.05",
                }
            )
        )
        await taken(ws)
        audit = audit_of(srv, run_id)
        await ws.close()
        return cmd, *audit

    cmd, detail, commands, alerts = run(body())
    assert cmd["command"] == {"type": "rewind", "step": 5, "auto": True}  # the newest snapshot before step 6
    assert detail["snapshots"] == [0, 4]
    (c,) = commands  # no pause as well
    assert c["type"] == "rewind" and c["step"] == 5 and c["origin"] == f"auto: nonfinite alert #{alerts[0]['id']}"
    assert c["state"] == "applied" and c["applied_step"] == 8 and c["detail"].startswith("rewound to")


def test_set_lr_round_trip(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await send_steps(ws, [record(0, lr=0.1)])
        await taken(ws)
        before = get(srv, f"/api/runs/{run_id}")["lr"]
        r = httpx.post(
            f"{srv.url}/api/runs/{run_id}/commands",
            json={"type": "set_lr", "lr": 0.01},
            headers=srv.headers,
            timeout=10,
        )
        msg = await recv_json(ws)
        await ws.send(dumps({"type": "ack", "id": msg["id"], "state": "applied", "applied_step": 1}))
        await taken(ws)
        after = get(srv, f"/api/runs/{run_id}")["lr"]
        await send_steps(ws, [record(1, lr=0.01)])
        commands = get(srv, f"/api/runs/{run_id}/commands")
        await ws.close()
        return r, msg, before, after, commands

    r, msg, before, after, commands = run(body())
    assert r.status_code == 202
    assert msg["command"] == {"type": "set_lr", "lr": 0.01}
    assert before == 0.1 and after == 0.01
    assert commands[0]["lr"] == 0.01 and commands[0]["threshold"] is None and commands[0]["state"] == "applied"


def test_probe_update_ratio_and_skipped_in_metrics_and_live(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(
            srv.trainer_url, srv.token, hello("probed", bn_layers=["bn"], relu_layers=["dense"])
        )
        browser = await open_browser(srv.browser_url, srv.token)
        await browser.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(browser, "run")
        await send_steps(
            ws,
            [
                record(0, n_bn=1, update_ratio=[1e-3, "NaN", 2e-3]),
                record(1, n_bn=1),
                record(2, n_bn=1, skipped=True, update_ratio=[0.5, 0.25, 0.125]),
            ],
        )
        await ws.send(dumps({"type": "probe", "step": 2, "dead_relu": {"dense": 0.25}, "bn_gap": {"bn": 0.5}}))
        live = await recv_until(browser, "probe")
        await ws.send(dumps({"type": "probe", "step": 3, "dead_relu": {"dense": 0.5}, "bn_gap": {}}))
        await taken(ws)
        metrics = get(srv, f"/api/runs/{run_id}/metrics")
        detail = get(srv, f"/api/runs/{run_id}")
        await ws.close()
        await browser.close()
        return run_id, live, metrics, detail

    run_id, live, m, detail = run(body())
    assert live == {
        "type": "probe",
        "run_id": run_id,
        "probe": {"step": 2, "dead_relu": {"dense": 0.25}, "bn_gap": {"bn": 0.5}},
    }
    ratio = m["update_ratio"]
    assert abs(ratio["dense/kernel"][0] - 1e-3) < 1e-9  # stored as float32
    assert ratio["dense/bias"] == ["NaN", None, 0.25] and ratio["out/kernel"][1] is None
    assert m["skipped"] == [False, False, True]
    assert m["probe"] == {"step": [2, 3], "dead_relu": {"dense": [0.25, 0.5]}, "bn_gap": {"bn": [0.5, None]}}
    assert detail["relu_layers"] == ["dense"] and detail["guard_nonfinite"] is False


def test_alerts_and_rules_survive_restart(gradwatch_server):
    srv = gradwatch_server()

    async def first():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        assert (
            patch(srv, f"/api/runs/{run_id}/alert-rules/dead_relu", {"params": {"threshold": 0.3}}).status_code == 200
        )
        await send_steps(ws, [record(0), nan_record(1)])
        await taken(ws)
        alerts = get(srv, f"/api/runs/{run_id}/alerts")
        await ws.close()
        return run_id, alerts

    run_id, before = run(first())
    srv.restart()
    assert get(srv, f"/api/runs/{run_id}/alerts") == before
    assert get(srv, f"/api/runs/{run_id}/alert-rules")["dead_relu"]["params"]["threshold"] == 0.3

    async def second():  # the trainer continues the run: the stored open alert goes on, not duplicated
        ws, again = await start_trainer(srv.trainer_url, srv.token, hello(run_id=run_id))
        await send_steps(ws, [record(2), nan_record(3)])
        await taken(ws)
        alerts = get(srv, f"/api/runs/{run_id}/alerts")
        await ws.close()
        return again, alerts

    again, after = run(second())
    assert again == run_id
    (a,) = after
    assert a["id"] == before[0]["id"] and a["count"] == 1 and a["last_step"] == 3 and a["step"] == 1
    assert a["state"] == "open" and a["latest"]["step"] == 3


def test_lifecycle_resolves_reopens_keeps_history_and_pauses_on_opening_only(gradwatch_server):
    """nonfinite resolves 50 clear steps after its last bad step; the return is episode 2, which pauses again."""
    srv = gradwatch_server()

    async def body():
        browser = await open_browser(srv.browser_url, srv.token)
        await recv_until(browser, "runs")
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("flaps", pause_on=["nonfinite"]))
        await send_steps(ws, [record(0), nan_record(1)])
        first = await recv_until(ws, "command")
        await send_steps(ws, [record(s) for s in range(2, 80)])
        resolved = await recv_until(browser, "alert", run_id=run_id)
        while resolved["alert"]["state"] != "resolved":
            resolved = await recv_until(browser, "alert", run_id=run_id)
        paused_after_resolve = len(get(srv, f"/api/runs/{run_id}/commands"))
        await send_steps(ws, [nan_record(80)])
        second = await recv_until(ws, "command")
        alerts = get(srv, f"/api/runs/{run_id}/alerts")
        commands = get(srv, f"/api/runs/{run_id}/commands")
        await ws.close()
        await browser.close()
        return run_id, first, resolved["alert"], paused_after_resolve, second, alerts, commands

    _, first, resolved, paused_after_resolve, second, alerts, commands = run(body())
    assert first["command"] == second["command"] == {"type": "pause"}
    assert (resolved["state"], resolved["resolved_step"], resolved["step"], resolved["last_step"]) == (
        "resolved",
        51,
        1,
        1,
    )
    assert paused_after_resolve == 1  # resolving never pauses
    old, new = alerts  # history: the resolved episode and the open one, apart
    assert (old["id"], old["state"], old["count"]) == (resolved["id"], "resolved", 1)
    assert (new["state"], new["count"], new["step"], new["resolved_step"]) == ("open", 2, 80, None)
    assert [c["origin"] for c in commands] == [f"auto: nonfinite alert #{a['id']}" for a in (old, new)]
