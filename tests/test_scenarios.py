"""Every scenario raises the alert it exists to show, at the right place; the healthy run raises none."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
from waiting import wait_until

from gradwatch.protocol import decode_float
from gradwatch.scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(shared_server: Any) -> Any:
    return shared_server


def run_scenario(server: Any, name: str, **overrides: Any) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=30)
    before = {r["id"] for r in api.get("/api/runs").json()}
    kwargs = {"server": server.url, "token": server.token, "run_name": f"test {name}", **overrides}
    model = SCENARIOS[name].run(kwargs, SCENARIOS[name].default_steps)
    (run,) = [r for r in api.get("/api/runs").json() if r["id"] not in before]
    wait_until(  # the finished status may still be on its way on a loaded machine
        lambda: api.get(f"/api/runs/{run['id']}").json()["status"] == "finished", message=f"run {run['id']} finished"
    )
    metrics = api.get(f"/api/runs/{run['id']}/metrics").json()
    alerts = api.get(f"/api/runs/{run['id']}/alerts").json()
    return metrics, alerts, model


def first_nonfinite_step(metrics: dict[str, Any]) -> int | None:
    for step, g, bad in zip(metrics["step"], metrics["global_norm"], metrics["loss_nonfinite"]):
        if not math.isfinite(decode_float(g)) or bad:
            return int(step)
    return None


def test_healthy_run_raises_no_alert(server: Any) -> None:
    metrics, alerts, _ = run_scenario(server, "healthy")
    assert len(metrics["step"]) == SCENARIOS["healthy"].default_steps
    assert alerts == []


def test_exploding_is_flagged_before_the_first_nan(server: Any) -> None:
    metrics, alerts, _ = run_scenario(server, "exploding")
    nan_at = first_nonfinite_step(metrics)
    assert nan_at is not None  # the scenario does end in NaN
    exploding = [a for a in alerts if a["kind"] == "exploding_gradients"]
    assert exploding and exploding[0]["step"] < nan_at
    assert exploding[0]["layer"] in metrics["grad_norm"]
    # The update/weight chart of a run that trains is never empty: every kernel, every step before the NaN.
    kernels = [k for k in metrics["update_ratio"] if k.endswith("kernel")]
    assert kernels
    for k in kernels:
        before = [decode_float(v) if v is not None else math.nan for v in metrics["update_ratio"][k][:nan_at]]
        assert np.isfinite(before).all() and min(before) > 0, k


def test_vanishing_names_an_early_layer(server: Any) -> None:
    metrics, alerts, _ = run_scenario(server, "vanishing")
    (alert,) = [a for a in alerts if a["kind"] == "vanishing_gradients"]
    names = list(metrics["grad_norm"])
    assert alert["layer"] in names[: len(names) // 2]  # one of the first layers, not the output
    assert alert["remedies"]
    assert {a["kind"] for a in alerts} == {"vanishing_gradients"}


def test_nan_inputs_names_the_features_as_origin(server: Any) -> None:
    metrics, alerts, _ = run_scenario(server, "nan_inputs")
    (alert,) = [a for a in alerts if a["kind"] == "nonfinite"]
    assert alert["step"] == first_nonfinite_step(metrics)
    assert alert["layer"] == next(iter(metrics["grad_norm"]))  # the first Dense kernel
    assert "features" in str(alert["evidence"]) or "features" in alert["message"]


def test_guard_keeps_the_weights_finite(server: Any) -> None:
    metrics, alerts, model = run_scenario(server, "nan_inputs", guard_nonfinite=True)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert any(metrics["skipped"])
    assert [a["kind"] for a in alerts] == ["nonfinite"]


def test_frozen_batchnorm_in_a_loop_without_training_flag(server: Any) -> None:
    metrics, alerts, _ = run_scenario(server, "frozen_batchnorm")
    (alert,) = [a for a in alerts if a["kind"] == "frozen_batchnorm"]
    assert alert["layer"] == next(iter(metrics["bn"]))


def test_dying_relu_names_the_dead_layer(server: Any) -> None:
    _, alerts, _ = run_scenario(server, "dying_relu")
    dead = [a for a in alerts if a["kind"] == "dead_relu"]
    # Steps and probes are judged in step order (not as they happen to arrive): the zero-gradient rule sees
    # dense_ok starve behind dense_dead (step 19) before the probe of step 20 names dense_dead itself. The
    # first alert lists both layers (their gradients are zero alike); the probe's names the dead one.
    assert dead and any(name.endswith("dense_dead") for name in dead[0]["layers"])
    assert any(a["layer"].endswith("dense_dead") for a in dead)
    assert {a["kind"] for a in alerts} == {"dead_relu"}


def _alerts_seen(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((a["kind"], a["layer"], tuple(a["layers"]), a["step"]) for a in alerts)


@pytest.mark.parametrize("name", ["frozen_batchnorm", "dying_relu"])
def test_the_same_alerts_at_the_same_steps_beside_a_cpu_hog(server: Any, name: str) -> None:
    """Which steps are sampled, and so what is concluded, must not depend on how loaded the machine is.

    frozen_batchnorm counts BatchNorm samples; dying_relu meets probes and steps.
    """
    _, quiet, _ = run_scenario(server, name, run_name=f"test {name} quiet")
    # One busy process per core, each ending by itself after a bound (and stopped as soon as the run is done).
    hog = "import time\nend = time.monotonic() + 240\nwhile time.monotonic() < end:\n    pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(os.cpu_count() or 2)]
    try:
        _, loaded, _ = run_scenario(server, name, run_name=f"test {name} loaded")
    finally:
        for p in hogs:
            p.kill()
            p.wait(timeout=30)
    assert quiet, "the scenario raises its alert"
    assert _alerts_seen(loaded) == _alerts_seen(quiet)
