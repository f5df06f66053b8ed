"""Offline runs synced later, with real processes: a trainer killed by SIGKILL, the real ``gradwatch sync``
CLI, a real server; and the online spool while the server is away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fittools import data, tiny_model
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.protocol import RUN_FILE_SUFFIX

TRAINER = Path(__file__).with_name("offline_trainer.py")
NAN_BATCH = 40


def file_steps(path: Path) -> dict[int, float]:
    """step -> global_norm of every complete steps line, read independently of gradwatch's reader."""
    out: dict[int, float] = {}
    for line in path.read_bytes().split(b"\n")[2:]:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("type") == "steps":
            out.update({r["step"]: r["global_norm"] for r in message["records"]})
    return out


def server_steps(srv: Any, run_id: int) -> dict[int, float]:
    m = httpx.get(f"{srv.url}/api/runs/{run_id}/metrics", headers=srv.headers, timeout=10).json()
    return dict(zip(m["step"], m["global_norm"], strict=True))


def sync(srv: Any, *paths: Path, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env["GRADWATCH_TOKEN"] = token or srv.token  # never on the command line (ps shows it)
    return subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "sync", *map(str, paths), "--server", srv.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def run_ids(srv: Any) -> list[int]:
    return [r["id"] for r in httpx.get(f"{srv.url}/api/runs", headers=srv.headers, timeout=10).json()]


def killed_offline_run(log_dir: Path, min_steps: int) -> Path:
    """Start an offline training process, SIGKILL it once its file holds ``min_steps`` steps; the file."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")},
        "GRADWATCH_SERVER": "http://127.0.0.1:9",
    }  # nothing listens there: offline must not care
    proc = subprocess.Popen(
        [sys.executable, str(TRAINER), str(log_dir), "2000", str(NAN_BATCH), "offline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:

        def written() -> bool:
            files = list(log_dir.glob(f"*{RUN_FILE_SUFFIX}"))
            if files and len(file_steps(files[0])) >= min_steps:
                return True
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            return False

        wait_until(written, 120, interval=0.1, message=f"the offline trainer to write {min_steps} steps")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    (path,) = log_dir.glob(f"*{RUN_FILE_SUFFIX}")
    assert proc.stdout is not None
    printed = [int(line.split()[1]) for line in proc.stdout.read().decode().splitlines() if line.startswith("step ")]
    # Each step takes >= 20 ms (the trainer sleeps): 50 steps are more than the last second before the kill.
    assert printed[-1] - max(file_steps(path)) <= 50, (printed[-1], max(file_steps(path)))
    return path


def wait_alerts(srv: Any, run_id: int) -> list[dict[str, Any]]:
    return list(
        wait_until(
            lambda: httpx.get(f"{srv.url}/api/runs/{run_id}/alerts", headers=srv.headers, timeout=10).json(),
            10,
            interval=0.1,
            message=f"run {run_id}'s alerts",
        )
    )


def test_killed_offline_run_syncs_exactly_once(gradwatch_server: Any, tmp_path: Path) -> None:
    path = killed_offline_run(tmp_path / "runs", min_steps=NAN_BATCH + 30)
    srv = gradwatch_server()
    written = file_steps(path)

    first = sync(srv, tmp_path / "runs")  # a folder: its run files
    assert first.returncode == 0, first.stderr
    (run_id,) = run_ids(srv)
    assert server_steps(srv, run_id) == written  # every step written before the kill, values exact
    alerts = wait_alerts(srv, run_id)
    nonfinite = [a for a in alerts if a["kind"] == "nonfinite"]
    assert nonfinite and nonfinite[0]["step"] == NAN_BATCH, alerts  # the synced run is diagnosed as a live one
    run = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json()
    assert run["status"] == "disconnected"  # killed: it never said finished

    again = sync(srv, path)
    assert again.returncode == 0, again.stderr
    assert run_ids(srv) == [run_id]
    assert server_steps(srv, run_id) == written
    assert wait_alerts(srv, run_id) == alerts  # no alert raised again, none counted twice


def test_torn_last_line_syncs_what_came_before(gradwatch_server: Any, tmp_path: Path) -> None:
    path = killed_offline_run(tmp_path / "runs", min_steps=20)
    # SIGKILL usually lands between two writes; cut the file inside its last line, as a kill in the
    # middle of a large line's write (or a full disk) leaves it.
    before = file_steps(path)
    raw = path.read_bytes()
    last = raw.rstrip(b"\n").rfind(b"\n")
    path.write_bytes(raw[: last + 1 + (len(raw) - last) // 2])
    assert not path.read_bytes().endswith(b"\n")
    expected = file_steps(path)
    srv = gradwatch_server()
    done = sync(srv, path)
    assert done.returncode == 0, done.stderr
    assert "cut short" in done.stderr and "skipped line" in done.stderr
    (run_id,) = run_ids(srv)
    assert server_steps(srv, run_id) == expected and 0 < len(expected) < len(before)


def test_bad_paths_are_named(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    missing = sync(srv, tmp_path / "nope")
    assert missing.returncode == 2 and "nope: no such file or folder" in missing.stderr
    junk = tmp_path / f"junk{RUN_FILE_SUFFIX}"
    junk.write_text('{"hello": 1}\n')
    bad = sync(srv, junk)
    assert bad.returncode == 1 and "not a gradwatch run file" in bad.stderr


def test_online_spools_undeliverable_reports_then_syncs(gradwatch_server: Any, tmp_path: Path) -> None:
    """The server is away and the buffer tiny: the overflow goes to disk, not into a gap."""
    srv = gradwatch_server()
    srv.stop()  # its port is known and nothing listens there now
    x, y = data(512)
    model = tiny_model()
    monitor = GradientMonitor(
        server=srv.url, token=srv.token, log_dir=tmp_path, run_name="spooled", max_buffer_mb=2e-3, flush_timeout=0.0
    )
    with pytest.warns(RuntimeWarning, match="cannot reach the server"):
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
        transport = monitor.session.transport  # type: ignore[union-attr]
        wait_until(lambda: transport.spooled > 40, message="the sender to spool the overflow")  # in its backoff
        monitor.close(timeout=0.0)
    (path,) = tmp_path.glob(f"*-spool{RUN_FILE_SUFFIX}")
    spooled = file_steps(path)
    assert transport.spooled == len(spooled) > 40 and transport.dropped == 0
    assert sorted(spooled) == list(range(len(spooled)))  # the oldest steps, none missing

    srv.restart()
    done = sync(srv, path)
    assert done.returncode == 0, done.stderr
    (run_id,) = run_ids(srv)
    assert server_steps(srv, run_id) == spooled


def test_spool_budget_bounds_the_file_then_gaps(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    srv.stop()
    x, y = data(512)
    monitor = GradientMonitor(
        server=srv.url, token=srv.token, log_dir=tmp_path, max_buffer_mb=2e-3, spool_mb=0.01, flush_timeout=0.0
    )
    with pytest.warns(RuntimeWarning, match="cannot reach the server"):
        tiny_model().fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
        transport = monitor.session.transport  # type: ignore[union-attr]
        wait_until(lambda: transport.spooled and transport.dropped, message="the spool budget to be reached")
        monitor.close(timeout=0.0)
    (path,) = tmp_path.glob(f"*-spool{RUN_FILE_SUFFIX}")
    assert path.stat().st_size <= 0.01 * 2**20
    assert transport.spooled > 0 and transport.dropped > 0  # past the budget: dropped, as a gap
    assert transport.outbox.gap is not None and transport.outbox.gap[2] == transport.dropped


def test_offline_mode_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADWATCH_MODE", "offline")
    monkeypatch.setenv("GRADWATCH_LOG_DIR", str(tmp_path))
    monitor = GradientMonitor(server="http://127.0.0.1:9")
    x, y = data(64)
    tiny_model().fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert monitor.close(timeout=5.0)
    (path,) = tmp_path.glob(f"*-offline{RUN_FILE_SUFFIX}")
    assert sorted(file_steps(path)) == list(range(8))
    assert json.loads(path.read_text().splitlines()[-1]) == {"type": "status", "state": "finished", "step": 7}
    monkeypatch.setenv("GRADWATCH_MODE", "ofline")
    with pytest.raises(ValueError, match=r"\$GRADWATCH_MODE='ofline' must be one of"):
        GradientMonitor()
    assert np.isfinite(list(file_steps(path).values())).all()


def test_spool_file_fills_the_hole_of_the_live_run(gradwatch_server: Any, tmp_path: Path) -> None:
    """Server up, then stopped mid-run, then back: the live run resumes, its spool file fills the hole."""
    srv = gradwatch_server()
    x, y = data(256)
    model = tiny_model()
    monitor = GradientMonitor(
        server=srv.url, token=srv.token, log_dir=tmp_path, run_name="holey", max_buffer_mb=2e-3, flush_timeout=10.0
    )
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)  # steps 0..31, delivered
    transport = monitor.session.transport  # type: ignore[union-attr]
    assert transport.drain(5.0)
    srv.stop()  # a clean stop: what it received is stored (a kill -9 may lose its last 0.2 s; docs/reliability.md)
    with pytest.warns(RuntimeWarning, match="cannot reach the server") as seen:
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[monitor], verbose=0)  # steps 32..95, server away
        # The sender notices the server is gone in its own time (later on a busy machine): wait for it, bounded.
        wait_until(lambda: any("cannot reach the server" in str(w.message) for w in seen), 60, message="the warning")
    srv.restart()
    assert monitor.close(timeout=15.0)  # reconnects, delivers what memory held, finishes
    (path,) = tmp_path.glob(f"*-spool{RUN_FILE_SUFFIX}")
    spooled = file_steps(path)
    assert transport.spooled == len(spooled) > 20 and transport.dropped == 0
    (run_id,) = run_ids(srv)
    live = server_steps(srv, run_id)
    # the hole (and what overflowed the tiny buffer while connected): exactly what was spooled
    assert spooled and set(spooled).isdisjoint(live) and sorted({*spooled, *live}) == list(range(96))

    done = sync(srv, path)
    assert done.returncode == 0, done.stderr
    assert run_ids(srv) == [run_id]  # into the live run, by its session id
    assert sorted(server_steps(srv, run_id)) == list(range(96))
    run = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json()
    assert run["status"] == "finished" and run["gaps"] == []


def test_bad_offline_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mode='ofline' must be one of \('online', 'offline'\)"):
        GradientMonitor(mode="ofline")
    with pytest.raises(ValueError, match=r"spool_mb=-1 must be a number of MiB >= 0"):
        GradientMonitor(spool_mb=-1)
    with pytest.raises(ValueError, match=r"log_dir=3 must be a folder path"):
        GradientMonitor(log_dir=3)  # type: ignore[arg-type]


def test_a_hand_written_loop_runs_offline_too(tmp_path: Path) -> None:
    """The loop hook is the other door into the same lifecycle: offline for it as well (pattern of the
    keras-io guide "Writing a training loop from scratch": GradientTape, then apply the gradients)."""
    import keras
    import tensorflow as tf

    x, y = data(64)
    model = tiny_model()
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    monitor = GradientMonitor(mode="offline", log_dir=tmp_path, server="http://127.0.0.1:9")
    with monitor.watch(model, optimizer) as watch:
        for i in range(8):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[i * 8 : (i + 1) * 8], model(x[i * 8 : (i + 1) * 8], training=True))
            watch.apply_gradients(tape.gradient(loss, model.trainable_variables), model.trainable_variables, loss)
    assert monitor.close(timeout=5.0)
    (path,) = tmp_path.glob(f"*-offline{RUN_FILE_SUFFIX}")
    assert sorted(file_steps(path)) == list(range(8))


def test_a_synced_run_raises_the_alerts_the_live_one_did(gradwatch_server: Any, tmp_path: Path) -> None:
    """The same seeded training twice, streamed live and offline then synced: the same alerts at the same steps."""
    srv = gradwatch_server()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    for mode in ("online", "offline"):
        env = {**base, "GRADWATCH_SERVER": srv.url, "GRADWATCH_TOKEN": srv.token}
        done = subprocess.run(
            [sys.executable, str(TRAINER), str(tmp_path / mode), "120", str(NAN_BATCH), mode],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        assert done.returncode == 0 and "done" in done.stdout, done.stdout + done.stderr
    assert sync(srv, tmp_path / "offline").returncode == 0
    live_id, synced_id = sorted(run_ids(srv))

    def alerts(run_id: int) -> list[tuple[Any, ...]]:
        return sorted((a["kind"], a["severity"], a["step"], a["count"]) for a in wait_alerts(srv, run_id))

    assert alerts(live_id) and alerts(synced_id) == alerts(live_id)
    assert server_steps(srv, synced_id).keys() == server_steps(srv, live_id).keys() == set(range(120))
