"""Schemathesis against the live OpenAPI schema of a real ``gradwatch serve``: no request may cause a 5xx.

Runs with the token (so requests reach the handlers) against a server that
already has a run with steps, so ``/api/runs/{run_id}/...`` also hits existing
data. Bounded: ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from simtrainer import hello, record, run, send_steps, start_trainer, taken

MAX_EXAMPLES = 25


def test_no_server_errors(shared_server: Any) -> None:
    srv = shared_server

    async def seed() -> None:
        ws, _ = await start_trainer(srv.trainer_url, srv.token, hello("fuzzed", bn_layers=["bn"]))
        await send_steps(ws, [record(s, n_bn=1) for s in range(20)])
        await taken(ws)
        await ws.close()

    run(seed())
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {srv.token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6, [op.label for op in operations]

    def fuzz(operation: Any) -> None:
        # (the schemathesis pytest plugin does not work with pytest 9; hypothesis drives it directly)
        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=10)

        try:
            check()
        except Exception as err:  # collect, so one report names every failing operation
            failures.append(f"{operation.label}: {str(err)[:500]}")

    for operation in operations:
        fuzz(operation)
    assert not failures, "\n".join(failures)
