"""Commands: POST -> stored pending -> delivered to the trainer -> ack -> applied, and the refusals."""

from __future__ import annotations

import httpx
import pytest
from simtrainer import hang_up, hello, open_browser, recv_json, recv_until, run, start_trainer, taken

from gradwatch.protocol import dumps


def post(srv, run_id: int, body, headers: dict[str, str] | None = None) -> httpx.Response:
    payload = {"content": body} if isinstance(body, str) else {"json": body}
    return httpx.post(f"{srv.url}/api/runs/{run_id}/commands", headers=headers or srv.headers, timeout=10, **payload)


def commands(srv, run_id: int) -> list[dict]:
    r = httpx.get(f"{srv.url}/api/runs/{run_id}/commands", headers=srv.headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_command_round_trip(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        r = post(
            srv,
            run_id,
            {"type": "set_clip", "threshold": 0.5, "mode": "norm"},
            headers={**srv.headers, "User-Agent": "pytest-agent"},
        )
        assert r.status_code == 202, r.text
        cmd_id = r.json()["id"]
        assert r.json() == {"id": cmd_id, "state": "pending"}
        msg = await recv_json(ws)
        assert msg == {
            "type": "command",
            "id": cmd_id,
            "command": {"type": "set_clip", "mode": "norm", "threshold": 0.5},
        }
        pending = commands(srv, run_id)
        await ws.send(dumps({"type": "ack", "id": cmd_id, "state": "applied", "applied_step": 42}))
        await taken(ws)
        done = commands(srv, run_id)
        detail = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers).json()
        await ws.close()
        return cmd_id, run_id, pending, done, detail

    cmd_id, run_id, pending, done, detail = run(body())
    assert pending[0]["state"] == "pending" and pending[0]["applied_step"] is None
    c = done[0]
    assert c["id"] == cmd_id and c["run_id"] == run_id and c["type"] == "set_clip"
    assert c["state"] == "applied" and c["applied_step"] == 42
    assert c["threshold"] == 0.5 and c["mode"] == "norm"
    assert "pytest-agent" in c["origin"] and "127.0.0.1" in c["origin"]
    assert c["updated_at"] >= c["created_at"]
    assert detail["clip"] == {"mode": "norm", "threshold": 0.5}


def test_rejected_ack_and_repeated_ack(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        cmd_id = post(srv, run_id, {"type": "pause"}).json()["id"]
        await recv_until(ws, "command", id=cmd_id)
        await ws.send(dumps({"type": "ack", "id": cmd_id, "state": "rejected", "detail": "already paused"}))
        await ws.send(dumps({"type": "ack", "id": cmd_id, "state": "applied", "applied_step": 3}))  # ignored
        await ws.send(dumps({"type": "ack", "id": 999999, "state": "applied", "applied_step": 3}))  # ignored
        await taken(ws)
        out = commands(srv, run_id)
        await ws.close()
        return out

    (c,) = run(body())
    assert c["state"] == "rejected" and c["applied_step"] is None and c["detail"] == "already paused"


def test_pending_command_delivered_on_reconnect(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await hang_up(srv, ws, run_id)
        first = post(srv, run_id, {"type": "pause"}).json()["id"]
        second = post(srv, run_id, {"type": "set_clip", "threshold": 3}).json()["id"]
        ws2, again = await start_trainer(srv.trainer_url, srv.token, hello(run_id=run_id))
        assert again == run_id
        got = [await recv_json(ws2), await recv_json(ws2)]
        await ws2.send(dumps({"type": "ack", "id": first, "state": "applied", "applied_step": 0}))
        await hang_up(srv, ws2, run_id)
        # Still pending after that disconnect: sent again on the next reconnect.
        ws3, _ = await start_trainer(srv.trainer_url, srv.token, hello(run_id=run_id))
        third = await recv_json(ws3)
        await ws3.close()
        return first, second, got, third

    first, second, got, third = run(body())
    assert [m["id"] for m in got] == [first, second]  # in posting order
    assert got[1]["command"] == {"type": "set_clip", "threshold": 3}
    assert third["id"] == second


def test_finished_run_refuses_commands_and_rejects_pending(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await hang_up(srv, ws, run_id)
        cmd_id = post(srv, run_id, {"type": "stop"}).json()["id"]
        ws2, _ = await start_trainer(srv.trainer_url, srv.token, hello(run_id=run_id))
        await recv_until(ws2, "command", id=cmd_id)
        await ws2.send(dumps({"type": "status", "state": "finished", "step": 5}))
        await taken(ws2)
        await ws2.close()
        return run_id, cmd_id, post(srv, run_id, {"type": "resume"}), commands(srv, run_id)

    _, cmd_id, r, cmds = run(body())
    assert r.status_code == 409
    assert "finished" in r.json()["detail"]
    assert cmds[0]["id"] == cmd_id and cmds[0]["state"] == "rejected"


def test_command_for_unknown_run_is_404(shared_server):
    r = post(shared_server, 987654, {"type": "pause"})
    assert r.status_code == 404
    assert "987654" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"type": "set_clip", "threshold": -1.0}, "threshold"),
        ({"type": "set_clip", "threshold": 0}, "greater than 0"),
        ({"type": "set_clip", "threshold": 0.0}, "threshold"),
        ({"type": "set_clip", "threshold": 1e10}, "1000000000"),
        ({"type": "set_clip", "threshold": "1.0"}, "threshold"),
        ({"type": "set_clip", "threshold": "NaN"}, "threshold"),
        ('{"type": "set_clip", "threshold": NaN}', "threshold: must be a finite number"),
        ('{"type": "set_clip", "threshold": Infinity}', "threshold"),
        ({"type": "set_clip"}, "set_clip needs 'threshold'"),
        ({"type": "set_clip", "threshold": 1.0, "mode": "sideways"}, "mode"),
        ({"type": "pause", "threshold": 1.0}, "takes no parameters"),
        ({"type": "explode"}, "explode"),
        ({"type": "pause", "extra": 1}, "extra"),
        ({}, "type"),
        ("not json", "not valid JSON"),
        ([1, 2], "object"),
    ],
)
def test_invalid_command_is_422_with_clear_message(shared_server, body, needle):
    srv = shared_server

    async def body_():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        hdrs = {**srv.headers, "Content-Type": "application/json"}
        r = post(srv, run_id, body, headers=hdrs)
        left = commands(srv, run_id)
        await ws.close()
        return r, left

    r, left = run(body_())
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and needle in detail, detail
    assert left == []  # nothing stored


@pytest.mark.parametrize("threshold", [1e-12, 1, 1e9])
def test_boundary_thresholds_are_accepted(shared_server, threshold):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        r = post(srv, run_id, {"type": "set_clip", "threshold": threshold})
        msg = await recv_json(ws)
        await ws.close()
        return r, msg

    r, msg = run(body())
    assert r.status_code == 202
    assert msg["command"]["threshold"] == threshold


def test_command_updates_reach_browser(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        b = await open_browser(srv.browser_url, srv.token)
        await recv_until(b, "runs")
        await b.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(b, "run")
        cmd_id = post(srv, run_id, {"type": "pause"}).json()["id"]
        created = await recv_until(b, "command", run_id=run_id)
        await recv_until(ws, "command", id=cmd_id)
        await ws.send(dumps({"type": "ack", "id": cmd_id, "state": "applied", "applied_step": 7}))
        applied = await recv_until(b, "command", run_id=run_id)
        await ws.send(dumps({"type": "status", "state": "paused", "step": 7}))
        run_msg = await recv_until(b, "run")
        await b.close()
        await ws.close()
        return cmd_id, created, applied, run_msg

    cmd_id, created, applied, run_msg = run(body())
    assert created["command"]["id"] == cmd_id and created["command"]["state"] == "pending"
    assert applied["command"]["state"] == "applied" and applied["command"]["applied_step"] == 7
    assert run_msg["run"]["status"] == "paused" and run_msg["run"]["paused"] is True
    assert "variables" not in run_msg["run"]
