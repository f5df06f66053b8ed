"""Trainer -> server -> SQLite -> REST, with a real server process and the real protocol."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from simtrainer import hello, record, run, send_steps, start_trainer, taken, until

from gradwatch.protocol import dumps


def get(srv, path: str, **params):
    r = httpx.get(srv.url + path, headers=srv.headers, params=params, timeout=10)
    return r


def test_health_needs_no_token(gradwatch_server):
    srv = gradwatch_server()
    r = httpx.get(srv.url + "/api/health", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "protocol": 3}


def test_steps_are_stored_and_read_back(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(bn_layers=["bn1"]))
        records = [record(i, n_bn=1) for i in range(50)]
        records[10] = record(10, n_bn=1, global_norm="NaN", loss="Infinity", grad_nan=[1, 0, 2], grad_inf=[0, 3, 0])
        records[11] = record(11, n_bn=1, global_norm="-Infinity", lr=None, bn=[])
        for i in range(0, 50, 10):
            await send_steps(ws, records[i : i + 10])
        await asyncio.sleep(0)  # no wait for the writer: REST reads must see what was received
        m = get(srv, f"/api/runs/{run_id}/metrics")
        assert m.status_code == 200, m.text
        data = m.json()
        await ws.close()
        return run_id, data

    run_id, data = run(body())
    assert data["run_id"] == run_id
    assert data["step"] == list(range(50))
    assert data["downsampled"] is False
    for key in (
        "epoch",
        "time",
        "loss",
        "lr",
        "global_norm",
        "clip_threshold",
        "clip_scale",
        "clipped",
        "clipped_fraction",
        "steps_per_sec",
        "weight_nonfinite",
        "loss_nonfinite",
    ):
        assert len(data[key]) == 50, key
    assert data["global_norm"][10] == "NaN"
    assert data["global_norm"][11] == "-Infinity"
    assert data["loss"][10] == "Infinity"
    assert data["lr"][11] is None and data["lr"][12] == pytest.approx(0.001)
    assert data["clip_threshold"] == [None] * 50
    assert data["global_norm"][20] == pytest.approx(20.5)
    assert set(data["grad_norm"]) == {"dense/kernel", "dense/bias", "out/kernel"}
    assert data["grad_norm"]["out/kernel"][7] == pytest.approx(9.0)
    assert data["nonfinite"]["dense/kernel"][10] == 1
    assert data["nonfinite"]["dense/bias"][10] == 3
    assert data["nonfinite"]["out/kernel"][10] == 2
    assert data["nonfinite"]["out/kernel"][9] == 0
    bn = data["bn"]["bn1"]
    assert set(bn) == {
        "moving_mean",
        "moving_variance",
        "moving_mean_min",
        "moving_mean_max",
        "moving_mean_delta",
        "moving_variance_min",
        "moving_variance_max",
        "moving_variance_delta",
    }
    assert bn["moving_mean"][5] == pytest.approx(5.0)
    assert bn["moving_variance_delta"][11] is None  # that step carried no BN rows


@pytest.mark.parametrize("max_points", [None, 4])
def test_omit_empty_leaves_out_only_empty_series(gradwatch_server, max_points):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        healthy, healthy_id = await start_trainer(srv.trainer_url, srv.token, hello("healthy"))
        records = [record(i) for i in range(20)]
        records[6] = record(6, grad_nan=[0, 2, 0])
        await send_steps(ws, records)
        await send_steps(
            healthy, [record(i, update_ratio=[1e-3, "NaN", 2e-3]) if i == 3 else record(i) for i in range(20)]
        )
        params = {} if max_points is None else {"max_points": max_points}
        out = {}
        for rid in (run_id, healthy_id):
            out[rid] = (
                get(srv, f"/api/runs/{rid}/metrics", **params).json(),
                get(srv, f"/api/runs/{rid}/metrics", omit_empty="true", **params).json(),
            )
        await ws.close()
        await healthy.close()
        return run_id, healthy_id, out

    run_id, healthy_id, out = run(body())
    full, sparse = out[run_id]
    assert set(full["nonfinite"]) == set(full["update_ratio"]) == {"dense/kernel", "dense/bias", "out/kernel"}
    assert sparse["nonfinite"] == {"dense/bias": full["nonfinite"]["dense/bias"]}  # only the variable with NaN
    assert max(sparse["nonfinite"]["dense/bias"]) == 2
    assert sparse["update_ratio"] == {}  # never measured in this run
    assert {k: v for k, v in sparse.items() if k not in ("nonfinite", "update_ratio")} == {
        k: v for k, v in full.items() if k not in ("nonfinite", "update_ratio")
    }
    full, sparse = out[healthy_id]
    assert sparse["nonfinite"] == {}
    assert sparse["update_ratio"] == full["update_ratio"]  # measured once: kept whole, nulls and all


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, list(range(20))),
        (5, None, list(range(5, 20))),
        (None, 4, list(range(5))),
        (7, 7, [7]),
        (15, 100, list(range(15, 20))),
        (30, None, []),
    ],
)
def test_step_range_is_inclusive(gradwatch_server, since, until, expected):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await send_steps(ws, [record(i) for i in range(20)])
        params = {k: v for k, v in (("since_step", since), ("until_step", until)) if v is not None}
        data = get(srv, f"/api/runs/{run_id}/metrics", **params).json()
        await ws.close()
        return data

    data = run(body())
    assert data["step"] == expected
    assert len(data["grad_norm"]["dense/kernel"]) == len(expected)


def test_downsampling_keeps_spike_and_nan(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        recs = [record(i, global_norm=1.0, grad_norm=[1.0, 1.0, 1.0]) for i in range(1000)]
        recs[537] = record(537, global_norm=1e6, grad_norm=[1.0, 5e5, 1.0])
        recs[800] = record(800, global_norm="NaN", grad_norm=[1.0, 1.0, "NaN"])
        for i in range(0, 1000, 250):
            await send_steps(ws, recs[i : i + 250])
        data = get(srv, f"/api/runs/{run_id}/metrics", max_points=100).json()
        await ws.close()
        return data

    data = run(body())
    assert data["downsampled"] is True
    assert len(data["step"]) <= 100
    assert len(data["global_norm"]) == len(data["step"]) == len(data["grad_norm"]["dense/bias"])
    assert max(v for v in data["global_norm"] if isinstance(v, float)) == 1e6
    assert "NaN" in data["global_norm"]
    assert max(data["grad_norm"]["dense/bias"]) == pytest.approx(5e5)
    assert "NaN" in data["grad_norm"]["out/kernel"]
    assert data["step"][0] == 0 and data["step"][-1] == 999


@pytest.mark.parametrize("max_points", [1, 0, -5, "x"])
def test_bad_max_points_is_422(gradwatch_server, max_points):
    srv = gradwatch_server()
    r = get(srv, "/api/runs/1/metrics", max_points=max_points)
    assert r.status_code == 422
    assert "max_points" in r.json()["detail"]


def test_runs_list_and_detail(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws1, id1 = await start_trainer(srv.trainer_url, srv.token, hello("first", meta={"model": "mlp"}))
        ws2, id2 = await start_trainer(srv.trainer_url, srv.token, hello("second", threshold=2.5))
        await send_steps(ws2, [record(0), record(1)])
        runs = get(srv, "/api/runs").json()
        detail = get(srv, f"/api/runs/{id2}").json()
        first = get(srv, f"/api/runs/{id1}").json()
        await ws1.close()
        await ws2.close()
        return id1, id2, runs, detail, first

    id1, id2, runs, detail, first = run(body())
    assert [r["id"] for r in runs] == [id2, id1]  # newest first
    assert runs[0]["name"] == "second" and runs[0]["status"] == "running" and runs[0]["step"] == 1
    assert runs[1]["step"] is None
    assert detail["variables"] == ["dense/kernel", "dense/bias", "out/kernel"]
    assert detail["clip"] == {"mode": "global_norm", "threshold": None}  # as the records report it
    assert detail["paused"] is False and detail["gaps"] == []
    assert first["meta"] == {"model": "mlp"}


def test_unknown_run_is_404(gradwatch_server):
    srv = gradwatch_server()
    for path in ("/api/runs/999", "/api/runs/999/metrics", "/api/runs/999/commands"):
        r = get(srv, path)
        assert r.status_code == 404, path
        assert "999" in r.json()["detail"]


def test_gap_and_status_are_recorded(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await send_steps(ws, [record(0)])
        await ws.send(dumps({"type": "gap", "from_step": 1, "to_step": 9, "dropped": 9}))
        await send_steps(ws, [record(10)])
        await ws.send(dumps({"type": "status", "state": "paused", "step": 10}))
        await taken(ws)
        paused = get(srv, f"/api/runs/{run_id}").json()
        await ws.send(dumps({"type": "status", "state": "finished", "step": 10}))
        await taken(ws)
        await ws.close()
        finished = get(srv, f"/api/runs/{run_id}").json()
        metrics = get(srv, f"/api/runs/{run_id}/metrics").json()
        return paused, finished, metrics

    paused, finished, metrics = run(body())
    assert paused["status"] == "paused" and paused["paused"] is True
    assert paused["gaps"] == [{"from_step": 1, "to_step": 9, "dropped": 9}]
    assert finished["status"] == "finished"  # a disconnect after finished stays finished
    assert metrics["gaps"] == [{"from_step": 1, "to_step": 9, "dropped": 9}]
    assert metrics["step"] == [0, 10]


def test_disconnect_marks_run_disconnected_and_reconnect_continues(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await send_steps(ws, [record(i) for i in range(5)])
        await ws.close()
        status = await until(lambda: get(srv, f"/api/runs/{run_id}").json()["status"], "disconnected")
        ws2, run_id2 = await start_trainer(srv.trainer_url, srv.token, hello(run_id=run_id))
        await send_steps(ws2, [record(i) for i in range(3, 8)])  # overlap: re-sent steps replace
        await taken(ws2)
        after = get(srv, f"/api/runs/{run_id}").json()["status"]
        data = get(srv, f"/api/runs/{run_id}/metrics").json()
        await ws2.close()
        return run_id, status, run_id2, after, data

    run_id, status, run_id2, after, data = run(body())
    assert status == "disconnected"
    assert run_id2 == run_id and after == "running"
    assert data["step"] == list(range(8))


def test_reconnect_with_unknown_run_id_starts_new_run(gradwatch_server):
    srv = gradwatch_server()

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(run_id=4242))
        await ws.close()
        return run_id

    assert run(body()) != 4242


def test_float32_storage_keeps_seven_digits(gradwatch_server):
    srv = gradwatch_server()
    value = 1.2345678e-7

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await send_steps(ws, [record(0, grad_norm=[value, 3.4e39, 0.0], global_norm=value)])
        data = get(srv, f"/api/runs/{run_id}/metrics").json()
        await ws.close()
        return data

    data = run(body())
    assert data["global_norm"][0] == value  # scalars are float64
    assert math.isclose(data["grad_norm"]["dense/kernel"][0], value, rel_tol=1e-6)
    assert data["grad_norm"]["dense/bias"][0] == "Infinity"  # beyond float32
