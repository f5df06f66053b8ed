"""A restarted trainer continues its run (``hello.resume``): by id even if finished, or the newest of its name."""

from __future__ import annotations

import httpx
from simtrainer import VARS, closed_with, hello, open_trainer, record, run, send_steps, start_trainer, taken

from gradwatch.protocol import CloseCode, dumps


def detail(srv, run_id: int) -> dict:
    return httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=5).json()


def finished_run(srv, name: str, variables=VARS, steps: int = 3) -> int:
    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(name, variables=variables))
        await send_steps(ws, [record(s, n_vars=len(variables)) for s in range(steps)])
        await ws.send(dumps({"type": "status", "state": "finished", "step": steps - 1}))
        await taken(ws)
        await ws.close()
        return run_id

    return run(body())


def test_resume_by_id_continues_a_finished_run(shared_server):
    srv = shared_server
    run_id = finished_run(srv, "resume-by-id")
    assert detail(srv, run_id)["status"] == "finished"

    async def body(msg: dict) -> int:
        ws, again = await start_trainer(srv.trainer_url, srv.token, msg)
        await send_steps(ws, [record(3)])
        await taken(ws)
        await ws.close()
        return again

    # without resume, a finished run is not continued: a new run
    assert run(body(hello("resume-by-id", run_id=run_id))) != run_id
    assert detail(srv, run_id)["step"] == 2
    assert run(body(hello("resume-by-id", run_id=run_id, resume=True))) == run_id
    assert detail(srv, run_id)["step"] == 3


def test_resume_auto_takes_the_newest_run_of_that_name_with_the_same_variables(shared_server):
    srv = shared_server
    older = finished_run(srv, "resume-auto")
    newer = finished_run(srv, "resume-auto")
    other_vars = finished_run(srv, "resume-auto", variables=("other/kernel",))
    assert older < newer < other_vars

    async def body(msg: dict) -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, msg)
        await ws.close()
        return run_id

    assert run(body(hello("resume-auto", resume=True))) == newer
    fresh = run(body(hello("resume-auto-nothing-yet", resume=True)))
    assert fresh not in (older, newer, other_vars)  # nothing to resume: a new run


def test_resume_of_an_unknown_run_is_refused_with_the_fix(shared_server):
    srv = shared_server

    async def body() -> tuple[int | None, str]:
        ws = await open_trainer(srv.trainer_url, srv.token)
        await ws.send(dumps(hello("ghost", run_id=987654, resume=True)))
        return await closed_with(ws)

    code, reason = run(body())
    assert code == CloseCode.BAD_MESSAGE and "no run 987654" in reason and "resume='auto'" in reason
