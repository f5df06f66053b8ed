"""`gradwatch demo` from the command line: embedded server, real training, the URL printed."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def run_demo(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GRADWATCH_TOKEN_FILE=str(tmp_path / "token"))
    env.pop("GRADWATCH_TOKEN", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradwatch.cli",
            "demo",
            "--port",
            "0",
            "--db",
            str(tmp_path / "d.db"),
            "--exit-when-done",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def stored_steps(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0])


def test_demo_prints_the_login_url_and_stores_the_run(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--epochs", "1", "--steps-per-second", "0")
    assert re.search(r"http://127\.0\.0\.1:\d+/login\?token=\S+", out)
    assert "training finished" in out
    assert stored_steps(tmp_path / "d.db") == 57  # 1797 digits in batches of 32
    assert not (tmp_path / "token").exists()  # the demo never overwrites a real server's token file


def test_demo_scenario_from_the_cli(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--scenario", "vanishing", "--steps", "40")
    assert "scenario vanishing" in out
    assert stored_steps(tmp_path / "d.db") == 40
