"""Validation at the door (issue 17): a record the server cannot hold or read back is refused before it is
stored, with a close code and a reason naming the field; other runs and every read are unaffected."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fittools import get
from readcheck import failed_reads, stored_steps
from simtrainer import closed_with, hello, record, run, send_steps, start_trainer, taken

from gradwatch.protocol import MAX_STEP, CloseCode, dumps

MARK = "__BAD__"


def frame_with(field: str, literal: str, **overrides: Any) -> str:
    """A steps frame whose ``field`` is the raw JSON text ``literal`` (a bare NaN is no JSON ``dumps`` writes)."""
    return dumps({"type": "steps", "records": [record(1, **{field: MARK}, **overrides)]}).replace(f'"{MARK}"', literal)


def offend(srv: Any, frame: str) -> tuple[int, int, int | None, str]:
    """A bystander streams steps 0-2 around an offender that sends step 0, then ``frame``."""

    async def body() -> tuple[int, int, int | None, str]:
        good, good_id = await start_trainer(srv.trainer_url, srv.token, hello("bystander"))
        bad, bad_id = await start_trainer(srv.trainer_url, srv.token, hello("offender"))
        await send_steps(good, [record(0)])
        await send_steps(bad, [record(0)])
        await bad.send(frame)
        code, reason = await closed_with(bad, timeout=5)
        await send_steps(good, [record(1), record(2)])
        await taken(good)
        await good.close()
        return good_id, bad_id, code, reason

    return run(body())


BARE = [
    ("time", "NaN"),
    ("time", "Infinity"),
    ("time", "-Infinity"),
    ("time", "1e999"),
    ("loss", "NaN"),
    ("global_norm", "Infinity"),
    ("grad_norm", "[1.0, NaN, 2.0]"),
]


@pytest.mark.parametrize(("field", "literal"), BARE, ids=[f"{f}={v}" for f, v in BARE])
def test_bare_nonfinite_literal_is_refused_and_wedges_nothing(shared_server: Any, field: str, literal: str) -> None:
    srv = shared_server
    good_id, bad_id, code, reason = offend(srv, frame_with(field, literal))
    assert code == CloseCode.BAD_MESSAGE, reason
    assert field in reason and "finite" in reason, reason
    assert failed_reads(srv, [good_id, bad_id]) == []
    assert stored_steps(srv, good_id) == [0, 1, 2]
    assert stored_steps(srv, bad_id) == [0]


@pytest.mark.parametrize("field", ["update_ratio", "grad_norm", "grad_nan", "grad_inf"])
@pytest.mark.parametrize("width", [0, 1, 2, 4])
def test_vector_of_the_wrong_width_is_refused(shared_server: Any, field: str, width: int) -> None:
    srv = shared_server
    value = [0] * width if field in ("grad_nan", "grad_inf") else [0.5] * width
    good_id, bad_id, code, reason = offend(srv, dumps({"type": "steps", "records": [record(1, **{field: value})]}))
    assert code == CloseCode.BAD_MESSAGE, reason
    assert f"{field} has {width} entries, expected 3" in reason, reason
    assert failed_reads(srv, [good_id, bad_id]) == []
    assert stored_steps(srv, bad_id) == [0]


def test_bn_rows_of_the_wrong_shape_are_refused(shared_server: Any) -> None:
    srv = shared_server

    async def body() -> tuple[int, int | None, str]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("bn", bn_layers=["bn1"]))
        await send_steps(ws, [record(0, n_bn=1)])
        await send_steps(ws, [record(1, bn=[[1.0] * 7])])
        code, reason = await closed_with(ws, timeout=5)
        return run_id, code, reason

    run_id, code, reason = run(body())
    assert code == CloseCode.BAD_MESSAGE and "bn must be 1 rows of 8 values" in reason, reason
    assert failed_reads(srv, [run_id]) == []


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (dumps({"type": "steps", "records": [record(MAX_STEP + 1)]}), "step: Input should be less than or equal to"),
        (
            dumps({"type": "steps", "records": [record(1, grad_nan=[2**62, 0, 0], grad_inf=[2**62, 0, 0])]}),
            "grad_nan.0: Input should be less than or equal to",
        ),
        (dumps({"type": "gap", "from_step": 10, "to_step": 5, "dropped": 1}), "from_step 10 is after to_step 5"),
        (dumps({"type": "status", "state": "running", "step": MAX_STEP + 1}), "step: Input should be less"),
        (dumps({"type": "probe", "step": 1, "dead_relu": {"relu": MARK}}).replace(f'"{MARK}"', "NaN"), "finite"),
    ],
    ids=["step>2^62", "nan+inf>int64", "gap-from>to", "status-step", "probe-bare-nan"],
)
def test_out_of_bounds_is_refused(shared_server: Any, frame: str, needle: str) -> None:
    srv = shared_server
    good_id, bad_id, code, reason = offend(srv, frame)
    assert code == CloseCode.BAD_MESSAGE, reason
    assert needle in reason, reason
    assert failed_reads(srv, [good_id, bad_id]) == []
    assert get(srv, f"/api/runs/{bad_id}")["gaps"] == []


def test_the_largest_step_is_stored_and_readable(shared_server: Any) -> None:
    srv = shared_server

    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("far"))
        await send_steps(ws, [record(0), record(MAX_STEP)])
        await taken(ws)
        await ws.close()
        return run_id

    run_id = run(body())
    assert stored_steps(srv, run_id) == [0, MAX_STEP]  # every stored step is visible in /metrics
    assert failed_reads(srv, [run_id]) == []


def test_sync_of_a_file_with_a_nan_time_harms_no_run(gradwatch_server: Any, tmp_path: Path) -> None:
    """The three-line file of the issue: header, hello, one steps line with a bare NaN time."""
    srv = gradwatch_server()
    uid = "ab" * 16
    header = {"type": "gradwatch_run", "format": 1, "uid": uid, "source": "offline", "created_at": 1.0}
    path = tmp_path / "x.gwrun.jsonl"
    path.write_text("\n".join([dumps(header), dumps(hello("synced", uid=uid)), frame_with("time", "NaN")]) + "\n")

    async def bystander() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("bystander"))
        await send_steps(ws, [record(s) for s in range(100)])
        await taken(ws)
        return run_id

    async def body() -> tuple[int, subprocess.CompletedProcess[str]]:
        run_id = await bystander()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "gradwatch.cli", "sync", str(path), "--server", srv.url, "--token", srv.token],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        ws, _ = await start_trainer(srv.trainer_url, srv.token, hello("bystander", run_id=run_id))
        await send_steps(ws, [record(s) for s in range(100, 200)])
        await taken(ws)
        await ws.close()
        return run_id, done

    good_id, done = run(body(), 90)
    ids = [r["id"] for r in get(srv, "/api/runs")]
    assert failed_reads(srv, ids) == [], done.stdout + done.stderr
    assert stored_steps(srv, good_id) == list(range(200))
    srv.restart()  # and nothing was only in memory
    assert stored_steps(srv, good_id) == list(range(200))
