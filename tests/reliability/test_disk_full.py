"""Disk full, for real: the database on a small tmpfs filled by a ballast file, then freed.

While writes fail the server keeps what it accepted in memory, refuses trainers with 4507 (they keep their
reports and retry), answers every read, says ``degraded`` on /api/health; when space returns it writes the
backlog on its own and takes trainers again; nothing it accepted is lost, also across a restart.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from readcheck import failed_reads, stored_steps
from simtrainer import closed_with, hang_up, hello, open_trainer, record, run, send_steps, start_trainer, until
from waiting import async_wait_until, wait_until

from gradwatch.protocol import CloseCode, dumps

VARS = [f"layer{i}/kernel" for i in range(2000)]
TMPFS_MB = 16


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here ({done.stderr.strip()}); the disk-full test needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write a ballast file until the disk is full."""
    ballast = disk / "ballast"
    with ballast.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return ballast


def health(srv: Any) -> dict[str, Any]:
    r = httpx.get(srv.url + "/api/health", headers=srv.headers, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_health(srv: Any, want: str, timeout: float = 30) -> dict[str, Any]:
    return wait_until(
        lambda: (h := health(srv))["status"] == want and h, timeout, interval=0.1, message=f"/api/health {want!r}"
    )


def wide(step: int) -> dict[str, Any]:
    return record(step, n_vars=len(VARS))


def test_disk_full_refuses_keeps_and_recovers(gradwatch_server: Any, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        srv = gradwatch_server(db=disk / "x.db")
        try:
            body(srv, disk)
        finally:
            srv.stop()


def body(srv: Any, disk: Path) -> None:
    async def while_full() -> tuple[int, int, Path, tuple[int | None, str], tuple[int | None, str]]:
        a, a_id = await start_trainer(srv.trainer_url, srv.token, hello("bystander"))
        await send_steps(a, [record(s) for s in range(100)])
        await hang_up(srv, a, a_id)
        b, b_id = await start_trainer(srv.trainer_url, srv.token, hello("wide", variables=VARS))
        await until(lambda: health(srv)["store"]["pending_steps"], 0)  # the bystander's rows are on disk
        assert health(srv)["status"] == "ok"
        ballast = fill(disk)
        for first in range(0, 500, 50):  # about 4 MB of rows: more than SQLite's WAL holds already
            await send_steps(b, [wide(s) for s in range(first, first + 50)])
        await async_wait_until(lambda: health(srv)["status"] != "ok", 30, interval=0.1, message="the disk full")
        await send_steps(b, [wide(1000)])  # accepted no more
        steps_refused = await closed_with(b)
        newcomer = await open_trainer(srv.trainer_url, srv.token)
        await newcomer.send(dumps(hello("newcomer")))
        return a_id, b_id, ballast, steps_refused, await closed_with(newcomer)

    a_id, b_id, ballast, (code, reason), (hello_code, hello_reason) = run(while_full(), 90)
    assert code == CloseCode.STORAGE_UNAVAILABLE and "full" in reason, reason
    assert hello_code == CloseCode.STORAGE_UNAVAILABLE, hello_reason
    h = health(srv)
    assert h["status"] == "degraded" and "full" in h["store"]["error"], h
    assert h["store"]["pending_steps"] > 0, h
    assert failed_reads(srv, [a_id, b_id], label=False) == []  # every read answers while the disk is full
    assert stored_steps(srv, a_id) == list(range(100))
    # What the server accepted (the frames before it noticed): on disk already, or kept in memory.
    accepted = len(stored_steps(srv, b_id)) + h["store"]["pending_steps"]

    ballast.unlink()  # space returns: the server recovers on its own
    h = wait_health(srv, "ok")
    assert h["store"]["pending_steps"] == 0, h
    assert stored_steps(srv, b_id) == list(range(accepted))  # all of it, no hole

    async def after() -> None:
        b, _ = await start_trainer(srv.trainer_url, srv.token, hello("wide", variables=VARS, run_id=b_id))
        await send_steps(b, [wide(s) for s in range(500, 510)])
        await b.close()

    run(after())
    assert failed_reads(srv, [a_id, b_id]) == []
    srv.restart()
    assert stored_steps(srv, b_id) == [*range(accepted), *range(500, 510)]
    assert stored_steps(srv, a_id) == list(range(100))
