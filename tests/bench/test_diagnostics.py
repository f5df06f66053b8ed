"""Smoke test of the diagnostic benchmarks (not part of ``run_all``): they run and report numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("|") > 4  # a table
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_step_cost_compares_plain_and_monitored(tmp_path: Path) -> None:
    r = _run(["bench.step_cost", "--steps", "5", "--variant", "guarded:guard_nonfinite=true"], tmp_path / "s.json")
    assert set(r["variants"]) == {"plain", "guarded"}
    assert all(v["median_ms"] > 0 for v in r["variants"].values())


@pytest.mark.timeout(300)
def test_gan_step_cost_compares_plain_and_both_optimizers_watched(tmp_path: Path) -> None:
    r = _run(["bench.gan_step_cost", "--steps", "5"], tmp_path / "g.json")
    assert set(r["variants"]) == {"plain", "monitored"}
    assert all(v["median_ms"] > 0 for v in r["variants"].values())


@pytest.mark.timeout(300)
def test_server_cpu_reports_cpu_per_record(tmp_path: Path) -> None:
    r = _run(["bench.server_cpu", "--quick", "--shapes", "mlp"], tmp_path / "c.json")
    text = json.dumps(r)
    assert "mlp" in text and any(ch.isdigit() for ch in text)


@pytest.mark.timeout(300)
def test_host_cost_times_each_part(tmp_path: Path) -> None:
    r = _run(["bench.host_cost", "--epochs", "1"], tmp_path / "h.json")
    assert r["steps"] > 0 and r["server_cpu_us_per_step"] >= 0
    parts = r["parts"]
    assert parts["RunSession.after_steps"]["calls"] == r["steps"]
    assert 0 < parts["GradientStats.read"]["calls"] <= r["steps"]
    assert parts["RunSession.after_steps"]["us_per_step"] >= parts["GradientStats.read"]["us_per_step"] > 0
