"""``gradwatch sync`` never overwrites (issue 17): real server, real CLI subprocess, run files on disk.

A file replays into the run its own session (uid) created and adds only what the server lacks;
a file naming another run, or a finished one, is refused with a clear message; a live trainer is
never displaced (1013). Lines the server refuses are skipped and named, the rest still uploaded,
in bounded memory whatever a line's size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from fittools import data, tiny_model
from simtrainer import hello, record, run, send_steps, start_trainer
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.protocol import RUN_FILE_SUFFIX, dumps


def run_file(path: Path, lines: list[str], uid: str | None = None, **hello_fields: Any) -> Path:
    """A run file as the trainer writes it: header, hello (with ``uid``), then ``lines`` as given."""
    uid = uid or uuid.uuid4().hex
    header = {"type": "gradwatch_run", "format": 1, "uid": uid, "source": "offline", "created_at": time.time()}
    with path.open("w") as f:
        for line in [json.dumps(header), dumps(hello(uid=uid, **hello_fields)), *lines]:
            f.write(line + "\n")
    return path


def steps_line(*steps: int, **overrides: Any) -> str:
    return dumps({"type": "steps", "records": [record(s, **overrides) for s in steps]})


def sync(srv: Any, *args: str | Path, wrapper: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI, token from the environment (never on the command line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env["GRADWATCH_TOKEN"] = srv.token
    cli = ["-c", wrapper] if wrapper else ["-m", "gradwatch.cli"]
    return subprocess.run(
        [sys.executable, *cli, "sync", *map(str, args), "--server", srv.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def metrics(srv: Any, run_id: int) -> dict[int, float]:
    m = httpx.get(f"{srv.url}/api/runs/{run_id}/metrics", headers=srv.headers, timeout=10).json()
    return dict(zip(m["step"], m["global_norm"], strict=True))


def get_run(srv: Any, run_id: int) -> dict[str, Any]:
    return dict(httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json())


def run_ids(srv: Any) -> list[int]:
    return sorted(r["id"] for r in httpx.get(f"{srv.url}/api/runs", headers=srv.headers, timeout=10).json())


def live_run(srv: Any, steps: range, finish: bool = False, **hello_fields: Any) -> int:
    """A run recorded over the trainer socket (then disconnected, or finished)."""

    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(**hello_fields))
        await send_steps(ws, [record(s) for s in steps])
        if finish:
            await ws.send(dumps({"type": "status", "state": "finished", "step": steps[-1]}))
        await ws.close()
        return run_id

    run_id = run(body())
    wait_until(
        lambda: get_run(srv, run_id)["status"] not in ("running", "paused") and len(metrics(srv, run_id)) >= len(steps),
        10,
        message=f"run {run_id} ended and stored",
    )
    return run_id


def test_a_file_naming_another_run_is_refused(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    other = live_run(srv, range(5))
    before, status = metrics(srv, other), get_run(srv, other)["status"]
    path = run_file(tmp_path / f"x{RUN_FILE_SUFFIX}", [steps_line(0, 1, 2, 3, 4, global_norm=999.0)], run_id=other)
    done = sync(srv, path)
    assert done.returncode == 1, done.stderr
    assert f"names run {other}" in done.stderr and "refused" in done.stderr, done.stderr
    assert "the server keeps" not in done.stdout
    assert metrics(srv, other) == before and get_run(srv, other)["status"] == status
    assert run_ids(srv) == [other]


def test_resume_of_a_finished_run_is_refused(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    done_run = live_run(srv, range(5), finish=True)
    before = metrics(srv, done_run)
    path = run_file(
        tmp_path / f"r{RUN_FILE_SUFFIX}", [steps_line(0, 1, 2, 5, global_norm=999.0)], run_id=done_run, resume=True
    )
    done = sync(srv, path)
    assert done.returncode == 1 and f"run {done_run} is finished" in done.stderr, done.stderr
    assert metrics(srv, done_run) == before and get_run(srv, done_run)["status"] == "finished"


def test_a_genuine_offline_resume_file_never_rewrites_the_finished_run(gradwatch_server: Any, tmp_path: Path) -> None:
    """``GradientMonitor(mode="offline", resume=<id>)`` writes a hello naming that run: synced, refused."""
    srv = gradwatch_server()
    x, y = data(64)
    live = GradientMonitor(server=srv.url, token=srv.token, run_name="genuine")
    tiny_model().fit(x, y, batch_size=16, epochs=1, callbacks=[live], verbose=0)
    assert live.close(timeout=10.0)
    (run_id,) = run_ids(srv)
    wait_until(lambda: get_run(srv, run_id)["status"] == "finished", 10, message=f"run {run_id} finished")
    before = metrics(srv, run_id)
    assert sorted(before) == [0, 1, 2, 3]
    offline = GradientMonitor(mode="offline", resume=run_id, log_dir=tmp_path / "off", run_name="genuine")
    tiny_model().fit(x * 3.0, y, batch_size=16, epochs=1, callbacks=[offline], verbose=0)
    assert offline.close(timeout=10.0)
    (path,) = (tmp_path / "off").glob(f"*{RUN_FILE_SUFFIX}")
    done = sync(srv, path)
    assert done.returncode == 1 and f"run {run_id} is finished" in done.stderr, done.stderr
    assert metrics(srv, run_id) == before and run_ids(srv) == [run_id]


def test_resume_of_an_unfinished_run_appends_only_what_is_missing(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    target = live_run(srv, range(5))  # disconnected, not finished: an offline resume may continue it
    before = metrics(srv, target)
    path = run_file(
        tmp_path / f"a{RUN_FILE_SUFFIX}", [steps_line(3, 4, 5, 6, global_norm=999.0)], run_id=target, resume=True
    )
    done = sync(srv, path)
    assert done.returncode == 0, done.stderr
    after = metrics(srv, target)
    assert {s: after[s] for s in before} == before  # steps 3, 4 kept as they were
    assert after[5] == after[6] == 999.0 and run_ids(srv) == [target]


def test_a_live_trainer_is_never_displaced(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    live_uid = uuid.uuid4().hex

    async def body() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], int]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(uid=live_uid))
        await send_steps(ws, [record(s) for s in range(3)])
        other = run_file(
            tmp_path / f"o{RUN_FILE_SUFFIX}", [steps_line(0, 1, 9, global_norm=999.0)], run_id=run_id, resume=True
        )
        own = run_file(tmp_path / f"s{RUN_FILE_SUFFIX}", [steps_line(7, global_norm=7.0)], uid=live_uid)
        import asyncio

        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, sync, srv, other)
        second = await loop.run_in_executor(None, sync, srv, own)
        await send_steps(ws, [record(3)])  # still connected: the trainer goes on
        await ws.send(dumps({"type": "status", "state": "finished", "step": 3}))
        await ws.close()
        return first, second, run_id

    first, second, run_id = run(body())
    for done in (first, second):
        assert done.returncode == 1, done.stderr
        assert "has its trainer connected" in done.stderr and "1013" in done.stderr, done.stderr
    wait_until(lambda: len(metrics(srv, run_id)) >= 4, 10, message="the live trainer's 4 steps")
    assert metrics(srv, run_id) == {s: s + 0.5 for s in range(4)}  # the live trainer's, nothing of the files
    assert get_run(srv, run_id)["status"] == "finished"


def test_refused_lines_are_skipped_and_named_the_rest_uploaded(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    lines = [steps_line(s) for s in range(12)]
    lines[3] = steps_line(3, grad_norm=[1.0])  # wrong vector length: the server refuses the frame
    lines[7] = steps_line(7, grad_nan=[0, 0, 0, 0, 0])
    lines[9] = json.dumps({"type": "steps", "records": [record(9)], "pad": "x" * (5 << 20)})  # > MAX_FRAME_BYTES
    path = run_file(tmp_path / f"b{RUN_FILE_SUFFIX}", lines)
    done = sync(srv, path)
    assert done.returncode == 0, done.stderr
    # header and hello are lines 1 and 2: steps line i is line i + 3
    assert "line 6:" in done.stderr and "grad_norm has 1 entries" in done.stderr, done.stderr
    assert "line 10:" in done.stderr and "grad_nan has 5 entries" in done.stderr, done.stderr
    assert "line 12:" in done.stderr and "longer than" in done.stderr, done.stderr
    (run_id,) = run_ids(srv)
    assert sorted(metrics(srv, run_id)) == [s for s in range(12) if s not in (3, 7, 9)]
    again = sync(srv, path)  # idempotent: nothing added, the same lines named
    assert again.returncode == 0 and "line 6:" in again.stderr, again.stderr
    assert run_ids(srv) == [run_id] and sorted(metrics(srv, run_id)) == [s for s in range(12) if s not in (3, 7, 9)]


# VmHWM (this process image's peak resident set), not ru_maxrss, which carries the forking parent's over exec.
PEAK_RSS = """
import re, sys
from gradwatch.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("peak_rss_kb", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
sys.exit(code)
"""


def test_a_100_mb_line_costs_no_memory(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    path = run_file(tmp_path / f"m{RUN_FILE_SUFFIX}", [steps_line(0)])
    with path.open("a") as f:
        f.write('{"type": "steps", "records": [], "pad": "')
        chunk = "y" * (1 << 20)
        for _ in range(100):
            f.write(chunk)
        f.write('"}\n')
        f.write(steps_line(1) + "\n")
    done = sync(srv, path, wrapper=PEAK_RSS)
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stderr.split("peak_rss_kb")[1].split()[0]) / 1024
    assert peak_mb < 200, f"sync of a file with a 100 MB line peaked at {peak_mb:.0f} MB"
    assert "line 4:" in done.stderr and "longer than" in done.stderr
    (run_id,) = run_ids(srv)
    assert sorted(metrics(srv, run_id)) == [0, 1]


def test_a_deeply_nested_first_line_is_named_not_a_crash(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    for name, text in [("n1", "[" * 200_000 + "]" * 200_000), ("n2", '{"type": ' + "[" * 200_000)]:
        path = tmp_path / f"{name}{RUN_FILE_SUFFIX}"
        path.write_text(text + "\n")
        done = sync(srv, path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "not a gradwatch run file" in done.stderr
    nested_hello = run_file(tmp_path / f"n3{RUN_FILE_SUFFIX}", [])
    lines = nested_hello.read_text().splitlines()
    nested_hello.write_text(lines[0] + "\n" + '{"type": "hello", "meta": ' + "[" * 200_000 + "\n")
    done = sync(srv, nested_hello)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "no valid hello" in done.stderr, done.stderr


def test_the_token_is_never_an_argument(gradwatch_server: Any, tmp_path: Path) -> None:
    srv = gradwatch_server()
    path = run_file(tmp_path / f"t{RUN_FILE_SUFFIX}", [steps_line(0)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "sync", str(path), "--server", srv.url, "--token", srv.token],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and "GRADWATCH_TOKEN" in done.stderr and "--token-file" in done.stderr, done.stderr
    assert srv.token not in done.stderr
    assert run_ids(srv) == []
