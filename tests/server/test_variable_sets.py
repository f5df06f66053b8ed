"""A run whose watched variables change within it (``variables`` message), on a real server."""

from __future__ import annotations

from typing import Any

import httpx
from simtrainer import VARS, closed_with, hello, record, run, send_steps, start_trainer

from gradwatch.protocol import CloseCode, dumps


def test_variables_stop_and_join_and_the_length_check_follows_the_set(shared_server: Any) -> None:
    srv = shared_server

    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("varsets"))
        await send_steps(ws, [record(0), record(1)])
        # from step 2 on: out/kernel stops, head/kernel joins
        await ws.send(dumps({"type": "variables", "from_step": 2, "variables": ["dense/kernel", "head/kernel"]}))
        await ws.send(dumps({"type": "variables", "from_step": 2, "variables": ["dense/kernel", "head/kernel"]}))
        await send_steps(ws, [record(2, n_vars=2), record(3, n_vars=2)])
        await ws.close()
        # A reconnect names the run's first set, and may not send three values for step 4 any more.
        ws, again = await start_trainer(srv.trainer_url, srv.token, hello("varsets", run_id=run_id))
        assert again == run_id
        await send_steps(ws, [record(4)])
        code, reason = await closed_with(ws)
        assert code == CloseCode.BAD_MESSAGE and "grad_norm has 3 entries, expected 2" in reason
        return run_id

    run_id = run(body())
    api = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=10)
    detail = api.get(f"/api/runs/{run_id}").json()
    assert detail["variables"] == [*VARS, "head/kernel"]
    assert detail["variable_sets"] == [{"from_step": 0, "variables": [0, 1, 2]}, {"from_step": 2, "variables": [0, 3]}]
    metrics = api.get(f"/api/runs/{run_id}/metrics").json()
    assert metrics["step"] == [0, 1, 2, 3]
    norms = metrics["grad_norm"]
    assert [v is None for v in norms["out/kernel"]] == [False, False, True, True]
    assert [v is None for v in norms["head/kernel"]] == [True, True, False, False]
    assert all(v is not None for v in norms["dense/kernel"])
    assert all(sum(metrics["nonfinite"][name]) == 0 for name in detail["variables"])
