"""Hostile or broken input: a clear error, the connection or request refused, nothing else affected, nothing stored.

(Frames over the 4 MiB limit: tests/server/test_ws_trainer.py::test_frame_larger_than_limit_is_refused.)
"""

from __future__ import annotations

import json

import httpx
import pytest
from fittools import get
from simtrainer import closed_with, hello, open_browser, record, recv_until, run, send_steps, start_trainer, taken

from gradwatch.protocol import PROTOCOL_VERSION, CloseCode, dumps

BIG = 2**64

BAD_FRAMES = [
    ("{not json", "bad message"),
    ('{"type": "steps", "records": [{"step": "one"}]}', "records.0"),
    ('{"type": "explode"}', "type"),
    ('["steps"]', "bad message"),
    (dumps({"type": "steps", "records": [record(1, global_norm="nan")]}), "global_norm"),
    (dumps({"type": "steps", "records": [record(1, grad_norm=[1.0])]}), "grad_norm has 1 entries"),
    (dumps({"type": "steps", "records": [record(1, extra=1)]}), "extra"),
    (dumps({"type": "steps", "records": [record(BIG)]}), "step: Input should be less than or equal to"),
    (dumps({"type": "steps", "records": [record(1, grad_nan=[BIG, 0, 0])]}), "grad_nan.0: Input should be less"),
    (dumps({"type": "gap", "from_step": 0, "to_step": BIG, "dropped": 1}), "to_step: Input should be less"),
    (dumps({"type": "ack", "id": -BIG, "state": "applied"}), "ack.id: Input should be greater than or equal to 0"),
    (dumps({"type": "status", "state": "exploded", "step": 1}), "state"),
    (dumps({"type": "hello", "protocol": 3}), "bad message"),  # a second hello
]


@pytest.mark.parametrize(("frame", "needle"), BAD_FRAMES, ids=range(len(BAD_FRAMES)))
def test_bad_trainer_frame_is_refused_and_harms_nothing(shared_server, frame, needle):
    srv = shared_server

    async def body() -> tuple[int, int, int | None, str]:
        good, good_id = await start_trainer(srv.trainer_url, srv.token, hello("bystander"))
        bad, bad_id = await start_trainer(srv.trainer_url, srv.token, hello("offender"))
        await send_steps(bad, [record(0)])
        await bad.send(frame)
        code, reason = await closed_with(bad)
        await send_steps(good, [record(s) for s in range(3)])
        await taken(good)
        await good.close()
        return good_id, bad_id, code, reason

    good_id, bad_id, code, reason = run(body())
    assert code == CloseCode.BAD_MESSAGE, reason
    assert needle in reason, reason
    assert get(srv, f"/api/runs/{good_id}/metrics")["step"] == [0, 1, 2]  # the writer was not poisoned
    bad = get(srv, f"/api/runs/{bad_id}/metrics")
    assert bad["step"] == [0] and bad["gaps"] == []  # nothing of the refused frame was stored
    assert get(srv, f"/api/runs/{bad_id}")["status"] == "disconnected"


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"protocol": PROTOCOL_VERSION + 1}, CloseCode.PROTOCOL_MISMATCH),
        ({"protocol": "1"}, CloseCode.PROTOCOL_MISMATCH),
        ({"run_id": BIG}, CloseCode.BAD_MESSAGE),
        ({"variables": [1, 2]}, CloseCode.BAD_MESSAGE),
        ({"meta": {"x": {"nested": "object"}}}, CloseCode.BAD_MESSAGE),
    ],
)
def test_bad_hello_is_refused_with_a_reason(shared_server, first, code):
    srv = shared_server
    before = len(get(srv, "/api/runs"))

    async def body() -> tuple[int | None, str]:
        from simtrainer import open_trainer

        ws = await open_trainer(srv.trainer_url, srv.token)
        await ws.send(dumps(hello("refused", **first)))
        return await closed_with(ws)

    got, reason = run(body())
    assert got == code and reason
    assert len(get(srv, "/api/runs")) == before  # no run was created


def test_nan_and_inf_round_trip_exactly(shared_server):
    srv = shared_server
    tiny, huge = 5e-324, 1.7976931348623157e308
    specials = ["NaN", "Infinity", "-Infinity", tiny, huge, -0.0, 0.1]

    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("nonfinite", bn_layers=["bn"]))
        await send_steps(
            ws,
            [
                record(
                    i,
                    loss=v,
                    lr=v,
                    global_norm=v,
                    clip_scale=v,
                    steps_per_sec=v,
                    grad_norm=[v, v, v],
                    bn=[[v] * 8],
                    grad_nan=[1, 0, 0],
                )
                for i, v in enumerate(specials)
            ],
        )
        b = await open_browser(srv.browser_url, srv.token)
        await recv_until(b, "runs")
        await b.close()
        await ws.close()
        return run_id

    run_id = run(body())
    m = get(srv, f"/api/runs/{run_id}/metrics")
    for name in ("loss", "lr", "global_norm", "clip_scale", "steps_per_sec"):
        got = m[name]
        assert got[:3] == ["NaN", "Infinity", "-Infinity"], name
        assert got[3:] == [tiny, huge, 0.0, 0.1], name  # float64 scalars: exact (SQLite keeps no sign of zero)
    norms = m["grad_norm"]["dense/kernel"]
    assert norms[:3] == ["NaN", "Infinity", "-Infinity"]
    assert norms[4] == "Infinity"  # float32 storage: beyond 3.4e38 is infinite, as documented
    assert m["bn"]["bn"]["moving_mean"][:3] == ["NaN", "Infinity", "-Infinity"]
    assert m["nonfinite"]["dense/kernel"] == [1] * len(specials)


def test_five_thousand_variables(shared_server):
    srv = shared_server
    names = [f"block{i // 10}/layer{i % 10}/kernel" for i in range(5000)]

    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("wide", variables=names))
        b = await open_browser(srv.browser_url, srv.token)
        await recv_until(b, "runs")
        await b.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(b, "run")
        for step in range(0, 40, 8):
            await send_steps(ws, [record(s, n_vars=5000) for s in range(step, step + 8)])
        live = await recv_until(b, "steps", timeout=20)
        assert len(live["records"][0]["grad_norm"]) == 5000
        await b.close()
        await ws.close()
        return run_id

    run_id = run(body())
    detail = get(srv, f"/api/runs/{run_id}")
    assert detail["variables"] == names
    m = get(srv, f"/api/runs/{run_id}/metrics")
    assert list(m["grad_norm"]) == names and m["step"] == list(range(40))
    assert m["grad_norm"][names[4999]][3] == 3.0 + 4999
    assert len(get(srv, f"/api/runs/{run_id}/metrics", max_points=10)["step"]) == 10


@pytest.mark.parametrize("path", ["/api/runs/{id}", "/api/runs/{id}/metrics", "/api/runs/{id}/commands"])
@pytest.mark.parametrize(
    ("run_id", "status"), [(987654321, 404), (2**63 - 1, 404), (2**63, 422), (-1, 422), ("abc", 422), (1.5, 422)]
)
def test_unknown_or_impossible_run_ids(shared_server, path, run_id, status):
    r = httpx.get(shared_server.url + path.format(id=run_id), headers=shared_server.headers, timeout=5)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_command_for_impossible_run_id(shared_server):
    r = httpx.post(
        f"{shared_server.url}/api/runs/{2**64}/commands",
        json={"type": "pause"},
        headers=shared_server.headers,
        timeout=5,
    )
    assert r.status_code == 422 and "run_id" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        '{"type": "set_clip", "threshold": -1}',
        '{"type": "set_clip", "threshold": 0}',
        '{"type": "set_clip", "threshold": -0.0}',
        '{"type": "set_clip", "threshold": NaN}',
        '{"type": "set_clip", "threshold": "NaN"}',
        '{"type": "set_clip", "threshold": Infinity}',
        '{"type": "set_clip", "threshold": 1e999}',
        '{"type": "set_clip", "threshold": 1000000000.5}',
        '{"type": "set_clip", "threshold": 1e308}',
        '{"type": "set_clip", "threshold": true}',
        '{"type": "set_clip", "threshold": "1.0"}',
        '{"type": "set_clip", "threshold": [1]}',
        '{"type": "set_clip"}',
        '{"type": "set_clip", "threshold": 1, "mode": "eval"}',
        '{"type": "set_clip", "threshold": 1, "__class__": "x"}',
        '{"type": "pause", "threshold": 1}',
        '{"type": "__import__(\'os\')"}',
        "[]",
        "",
    ],
)
def test_bad_commands_are_422_and_never_stored(shared_server, body):
    srv = shared_server

    async def make_run() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("commanded"))
        await ws.close()
        return run_id

    run_id = run(make_run())
    r = httpx.post(
        f"{srv.url}/api/runs/{run_id}/commands",
        content=body,
        timeout=5,
        headers={**srv.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("invalid request:"), detail
    json.dumps(r.json(), allow_nan=False)  # the error body itself is strict JSON
    assert get(srv, f"/api/runs/{run_id}/commands") == []
