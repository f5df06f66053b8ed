"""Real ``model.fit`` with ``GradientMonitor`` while the real server is absent, killed and restarted.

Training must never wait for the server; after it comes back every step is on
the server, or inside an explicit gap when the trainer's buffer overflowed.
"""

from __future__ import annotations

import signal
import time
import warnings
from typing import Any

import httpx
import pytest
from fittools import Pace, Script, TimedMonitor, covered, data, get, tiny_model
from waiting import wait_until

PACE = 0.015  # seconds per step: a 5 s outage covers ~300 steps
HANG = 0.5  # seconds: a per-step callback cost above this means something blocked the training thread


def run_id_and_step(srv: Any) -> tuple[int, int] | None:
    runs = get(srv, "/api/runs")
    if runs and runs[0]["step"] is not None:
        return runs[0]["id"], runs[0]["step"]
    return None


def fit_with(srv: Any, script: Script, **monitor_kwargs: Any) -> tuple[Any, TimedMonitor, Pace, float]:
    x, y = data()
    model = tiny_model()
    mon = TimedMonitor(server=srv.url, token=srv.token, flush_timeout=15, **monitor_kwargs)
    extra: list[int] = []

    def done() -> bool:  # run ~60 more steps after the script finished, so the trainer streams to the new server
        if script.finished.is_set():
            extra.append(1)
        return len(extra) > 60

    pace = Pace(PACE, done, max_seconds=60)
    started = time.monotonic()
    script.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the "cannot reach the server" warning is expected
        model.fit(x, y, batch_size=8, epochs=1000, verbose=0, callbacks=[mon, pace])
        mon.close()  # finish the run and deliver the rest (what interpreter exit would do)
    elapsed = time.monotonic() - started
    script.join(30)
    if script.error is not None:
        raise script.error
    assert script.finished.is_set(), "the fault script did not finish"
    return model, mon, pace, elapsed


def streaming(srv: Any, timeout: float) -> Any:
    return wait_until(
        lambda: run_id_and_step(srv), timeout, message="the trainer to connect and stream", ignore=(httpx.HTTPError,)
    )


@pytest.mark.timeout(120)
def test_absent_at_start_then_killed_and_restarted_loses_nothing(gradwatch_server):
    srv = gradwatch_server()
    srv.kill()  # nothing listens when training starts
    outage: dict[str, float] = {}

    def script() -> None:
        time.sleep(2.0)  # the scenario: the fit runs a while with no server at all
        srv.start()
        streaming(srv, 20)
        time.sleep(1.0)  # the scenario: a second of live streaming before the fault
        srv.kill()  # SIGKILL mid-run: no shutdown code runs
        t0 = time.monotonic()
        time.sleep(5.0)  # the outage itself: its length is what the test is about
        srv.start()
        outage["seconds"] = time.monotonic() - t0

    model, mon, pace, elapsed = fit_with(srv, Script(script))
    total = int(model.optimizer.iterations.numpy())
    assert outage["seconds"] >= 5.0
    assert total == pace.steps and total > 300
    assert mon.worst < HANG, f"a training step waited {mon.worst:.3f} s in the callback"
    assert elapsed < 90

    runs = get(srv, "/api/runs")
    assert len(runs) == 1, runs  # one run, continued across both reconnects
    run_id = runs[0]["id"]
    detail = get(srv, f"/api/runs/{run_id}")
    assert detail["status"] == "finished" and detail["step"] == total - 1
    m = get(srv, f"/api/runs/{run_id}/metrics")
    assert m["gaps"] == []  # the default 64 MiB buffer holds far more than this outage
    assert m["step"] == list(range(total)), sorted(set(range(total)) - set(m["step"]))[:20]


@pytest.mark.timeout(120)
def test_overflow_during_outage_is_an_explicit_gap(gradwatch_server):
    srv = gradwatch_server()

    def script() -> None:
        streaming(srv, 30)
        time.sleep(0.5)  # the scenario: some live streaming before the fault
        srv.kill()
        time.sleep(4.0)  # ~250 steps; the buffer below holds ~60 of them
        srv.start()

    # spool_mb=0: the drop path itself (with a spool the overflow goes to disk; test_offline_sync.py)
    model, mon, _, _ = fit_with(srv, Script(script), max_buffer_mb=0.02, spool_mb=0)
    total = int(model.optimizer.iterations.numpy())
    assert mon.worst < HANG
    runs = get(srv, "/api/runs")
    assert len(runs) == 1
    m = get(srv, f"/api/runs/{runs[0]['id']}/metrics")
    gaps = m["gaps"]
    assert gaps, "records were dropped but no gap was recorded"
    missing = set(range(total)) - set(m["step"])
    assert missing, "the buffer was expected to overflow"
    assert covered(m["step"], gaps) == set(range(total))  # no silent hole
    assert sum(g["dropped"] for g in gaps) == len(missing)
    assert all(g["from_step"] <= g["to_step"] for g in gaps)
    assert mon.session is not None and mon.session.transport.dropped == len(missing)
    assert get(srv, f"/api/runs/{runs[0]['id']}")["gaps"] == gaps  # what the page's charts draw


@pytest.mark.timeout(120)
def test_a_server_that_stalls_then_dies_loses_nothing(gradwatch_server):
    # SIGSTOP: the server's socket keeps accepting bytes, so for the trainer every frame is "sent",
    # but none is taken, and what it took just before may not be committed. Then SIGKILL. Nothing of
    # that was confirmed (a mark is answered once committed): it must be sent again to the new server.
    srv = gradwatch_server()

    def script() -> None:
        streaming(srv, 30)
        time.sleep(0.5)  # the scenario: some live streaming before the fault
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGSTOP)
        time.sleep(4.0)  # ~250 steps, far fewer bytes than the socket buffers hold
        srv.kill()
        srv.start()

    model, _, _, _ = fit_with(srv, Script(script))
    total = int(model.optimizer.iterations.numpy())
    runs = get(srv, "/api/runs")
    assert len(runs) == 1, runs
    m = get(srv, f"/api/runs/{runs[0]['id']}/metrics")
    assert m["gaps"] == []
    assert m["step"] == list(range(total)), sorted(set(range(total)) - set(m["step"]))[:20]
