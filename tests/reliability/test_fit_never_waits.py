"""No ``fit()`` waits on the monitor: an absent or silent server costs ``on_train_end`` nothing, and
what was buffered is kept across fits and delivered when the server is back (or reported at exit).

The time bounds here tell waiting from not waiting: a monitor that waited would take its
``flush_timeout`` (10 s), one that does not takes milliseconds; the bounds sit far between the two, so
that a loaded machine cannot fail them. How little it costs is measured in bench/, not here.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
from fittools import data, get, tiny_model
from waiting import wait_until

from gradwatch import GradientMonitor

STEPS_PER_FIT = 256 // 32
NOT_WAITING = 5.0  # seconds: well under the 10 s flush_timeout a waiting monitor would take


class EndTimer(GradientMonitor):
    """Measures ``on_train_end`` (the whole cost the monitor adds after the last step)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.end_times: list[float] = []

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        t0 = time.perf_counter()
        super().on_train_end(logs)
        self.end_times.append(time.perf_counter() - t0)


def three_fits(mon: GradientMonitor) -> Any:
    model = tiny_model()
    x, y = data()
    for _ in range(3):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[mon])
    return model


def test_fits_with_the_server_away_return_at_once_and_are_delivered_when_it_starts(gradwatch_server: Any) -> None:
    srv = gradwatch_server()
    srv.stop()  # its port, token and database, with nothing listening
    mon = EndTimer(server=srv.url, token=srv.token, run_name="away", flush_timeout=10)
    three_fits(mon)
    assert len(mon.end_times) == 3 and max(mon.end_times) < NOT_WAITING, mon.end_times
    assert mon.session is not None and mon.session.transport.undelivered >= 3 * STEPS_PER_FIT

    srv.start()
    total = 3 * STEPS_PER_FIT
    runs = wait_until(
        lambda: (r := get(srv, "/api/runs")) and r[0]["step"] == total - 1 and r,
        20,
        message="all steps",
        ignore=(httpx.HTTPError,),
    )
    assert len(runs) == 1, runs  # one run for the three fits
    run = wait_until(
        lambda: (d := get(srv, f"/api/runs/{runs[0]['id']}"))["status"] == "idle" and d,
        10,
        message="idle",
        ignore=(httpx.HTTPError,),
    )
    metrics = get(srv, f"/api/runs/{run['id']}/metrics")
    assert metrics["step"] == list(range(total))  # continuous, none lost, none twice
    assert get(srv, f"/api/runs/{run['id']}")["gaps"] == []
    mon.close(5)
    assert get(srv, f"/api/runs/{run['id']}")["status"] == "finished"


def test_a_silent_server_costs_fit_nothing() -> None:
    # Accepts TCP connections (the kernel's backlog does) but never answers the websocket handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mon = EndTimer(server=f"http://127.0.0.1:{silent.getsockname()[1]}", token="t" * 16, flush_timeout=10)
        three_fits(mon)
        assert max(mon.end_times) < NOT_WAITING, mon.end_times
        started = time.perf_counter()
        assert mon.close(0.5) is False  # bounded by its timeout, and says nothing was delivered
        assert time.perf_counter() - started < 0.5 + NOT_WAITING


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from fittools import data, tiny_model
    from gradwatch import GradientMonitor

    mon = GradientMonitor(server={url!r}, token={token!r}, run_name="exit", flush_timeout={flush})
    model, (x, y) = tiny_model(), data()
    for _ in range(2):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[mon])
    print("fits done", flush=True)
    """
)


def run_script(tmp_path: Path, url: str, token: str, flush: float) -> tuple[int, str, float]:
    """Runs the script; returns its exit code, stderr and the seconds from its last line to its exit."""
    path = tmp_path / "fit_then_exit.py"
    path.write_text(SCRIPT.format(here=str(Path(__file__).parent), url=url, token=token, flush=flush))
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "fits done"
        done_at = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err, time.monotonic() - done_at


def test_exit_delivers_what_is_buffered_and_finishes_the_run(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    code, err, _ = run_script(tmp_path, srv.url, srv.token, 10.0)
    assert code == 0 and "could not deliver" not in err, err[-2000:]
    (run,) = get(srv, "/api/runs")
    assert run["status"] == "finished" and run["step"] == 2 * STEPS_PER_FIT - 1


def test_exit_with_the_server_away_waits_flush_timeout_and_says_what_is_lost(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code, err, exit_took = run_script(tmp_path, f"http://127.0.0.1:{port}", "t" * 16, 1.0)
    assert code == 0, err[-2000:]
    lines = [line for line in err.splitlines() if "could not deliver" in line]
    assert len(lines) == 1, err[-2000:]
    # 2 fits of 8 steps, 4 statuses (idle, running for the second fit, idle, finished at exit),
    # the activation probe of step 0 (on by default, on the training batch), and the list of kept
    # snapshots once the one of step 0 is taken (every 100 steps by default)
    assert f"{2 * STEPS_PER_FIT + 4 + 1 + 1} reports of run 'exit'" in lines[0]
    # the flush waited flush_timeout, then the interpreter ended (not the 60 s of a hang)
    assert 1.0 <= exit_took < 1.0 + 4 * NOT_WAITING
