"""MultiWorkerMirroredStrategy with two local worker processes: the chief streams, every worker obeys.

Each worker is a real TensorFlow process (multi_worker_trainer.py) on loopback
ports; the test steers the run through the real server while they train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from .test_monitor_integration import Api

pytestmark = pytest.mark.timeout(300)

TRAINER = Path(__file__).with_name("multi_worker_trainer.py")


def start_workers(server: Any, count: int = 2) -> list[subprocess.Popen[str]]:
    ports: list[int] = []
    while len(ports) < count:  # the OS may hand the same free port out twice in a row
        if (port := free_port()) not in ports:
            ports.append(port)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    return [
        subprocess.Popen(
            [sys.executable, str(TRAINER), str(i), ",".join(map(str, ports)), server.url, server.token],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(count)
    ]


def finish(workers: list[subprocess.Popen[str]], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Each worker's JSON result; kills every worker that does not end in time (never leaves one behind)."""
    results, failures = [], []
    deadline = time.monotonic() + timeout
    for proc in workers:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append(f"worker {len(results) + len(failures)} did not end:\n{err[-2000:]}")
            continue
        if proc.returncode != 0:
            failures.append(f"worker exited with {proc.returncode}:\n{err[-3000:]}")
            continue
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert not failures, "\n".join(failures)
    return results


def test_chief_streams_and_every_worker_follows_commands_at_the_same_step(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    workers = start_workers(server)
    api = Api(server)
    try:
        run = api.wait(
            lambda: (runs := api.get("/api/runs")) and (runs[0]["step"] or 0) >= 10 and runs[0],
            timeout=120,
            desc="the run to stream ten steps",
        )
        run_id = run["id"]
        clip = api.wait_applied(run_id, api.post_command(run_id, type="set_clip", mode="global_norm", threshold=0.01))
        lr = api.wait_applied(run_id, api.post_command(run_id, type="set_lr", lr=0.5))

        paused = api.wait_applied(run_id, api.post_command(run_id, type="pause"))
        api.wait(lambda: api.get(f"/api/runs/{run_id}")["status"] == "paused", desc="paused status")
        at_pause = api.get(f"/api/runs/{run_id}")["step"]
        time.sleep(1.5)  # stays, an absence (no step): the other worker waits in the next all-reduce meanwhile
        assert api.get(f"/api/runs/{run_id}")["step"] == at_pause
        resumed = api.wait_applied(run_id, api.post_command(run_id, type="resume"))

        api.wait(lambda: api.get(f"/api/runs/{run_id}")["step"] >= at_pause + 5, desc="training to resume")
        stop = api.wait_applied(run_id, api.post_command(run_id, type="stop"))
        results = finish(workers)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert [c["state"] for c in (clip, lr, paused, resumed, stop)] == ["applied"] * 5
    chief, other = sorted(results, key=lambda r: r["index"])
    # Both workers ran the step that carried the stop flag, and no other.
    assert chief["steps"] == other["steps"] == stop["applied_step"] + 1
    # Clipping and the learning rate changed at the same step everywhere: the weights never diverged.
    assert chief["weights"] == pytest.approx(other["weights"], rel=1e-6, abs=1e-7)

    runs = api.get("/api/runs")
    assert len(runs) == 1 and runs[0]["status"] == "finished"  # one stream, the chief's
    meta = api.get(f"/api/runs/{run_id}")["meta"]
    assert (meta["workers"], meta["replicas"]) == (2, 2)
    m = api.get(f"/api/runs/{run_id}/metrics")
    assert m["step"] == list(range(chief["steps"]))
    # The norms are those of the whole global batch's gradient, summed over the workers.
    checked = len(chief["expected"])
    assert m["global_norm"][:checked] == pytest.approx(chief["expected"], rel=1e-4)
    by_step = list(zip(m["step"], m["clip_threshold"], m["lr"], m["clip_scale"], m["global_norm"]))
    for step, threshold, rate, scale, norm in by_step:
        assert threshold == (pytest.approx(0.01) if step >= clip["applied_step"] else None)  # None: not clipping
        assert rate == pytest.approx(0.5 if step >= lr["applied_step"] else 0.05)
        if step >= clip["applied_step"]:
            assert scale == pytest.approx(min(1.0, 0.01 / norm), rel=1e-4)
