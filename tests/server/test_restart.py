"""History survives a clean restart and a SIGKILL; pending commands survive too."""

from __future__ import annotations

import httpx
from simtrainer import hang_up, hello, record, recv_json, run, send_steps, start_trainer, taken, until


def get(srv, path: str):
    r = httpx.get(srv.url + path, headers=srv.headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_restart_keeps_history_and_pending_commands(gradwatch_server):
    srv = gradwatch_server()

    async def first():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("kept", bn_layers=["bn"]))
        await send_steps(ws, [record(i, n_bn=1) for i in range(30)] + [record(30, n_bn=1, loss="NaN")])
        await ws.send('{"type":"gap","from_step":31,"to_step":40,"dropped":10}')
        cmd = httpx.post(
            f"{srv.url}/api/runs/{run_id}/commands",
            json={"type": "set_clip", "threshold": 2.0},
            headers=srv.headers,
            timeout=5,
        ).json()
        await recv_json(ws)  # delivered, never acknowledged
        await taken(ws)
        await hang_up(srv, ws, run_id)
        return run_id, cmd["id"], get(srv, f"/api/runs/{run_id}/metrics")

    run_id, cmd_id, before = run(first())
    srv.restart()
    after = get(srv, f"/api/runs/{run_id}/metrics")
    assert after == before
    assert after["loss"][30] == "NaN" and after["gaps"] == [{"from_step": 31, "to_step": 40, "dropped": 10}]
    detail = get(srv, f"/api/runs/{run_id}")
    assert detail["name"] == "kept" and detail["status"] == "disconnected" and detail["step"] == 30

    async def second():
        ws, again = await start_trainer(srv.trainer_url, srv.token, hello("kept", bn_layers=["bn"], run_id=run_id))
        msg = await recv_json(ws)
        await ws.close()
        return again, msg

    again, msg = run(second())
    assert again == run_id
    assert msg["id"] == cmd_id and msg["command"]["threshold"] == 2.0


def test_sigkill_loses_at_most_the_last_second(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        for i in range(0, 200, 20):
            await send_steps(ws, [record(s) for s in range(i, i + 20)])
        await taken(ws)
        # the writer writes on its own within its flush interval (health reads never flush it)
        await until(lambda: get(srv, "/api/health")["store"]["pending_steps"], 0)
        srv.kill()
        return run_id

    run_id = run(body())
    srv.start()
    data = get(srv, f"/api/runs/{run_id}/metrics")
    assert data["step"] == list(range(200))
    assert get(srv, f"/api/runs/{run_id}")["status"] == "disconnected"


def test_running_run_is_disconnected_after_restart(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await ws.send('{"type":"status","state":"paused","step":0}')
        await taken(ws)
        srv.kill()
        return run_id

    run_id = run(body())
    srv.start()
    assert get(srv, "/api/runs")[0]["id"] == run_id
    assert get(srv, f"/api/runs/{run_id}")["status"] == "disconnected"
