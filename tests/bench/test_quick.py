"""Smoke test of the benchmark harness: ``python -m bench.run_all --quick`` runs every benchmark
and the report has every section with numbers. No timing assertions: a slow CI machine never fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _numbers(section: object) -> list[float]:
    """Every number anywhere in a result (bools excluded)."""
    if isinstance(section, bool):
        return []
    if isinstance(section, (int, float)):
        return [float(section)]
    if isinstance(section, dict):
        return [x for v in section.values() for x in _numbers(v)]
    if isinstance(section, list):
        return [x for v in section for x in _numbers(v)]
    return []


@pytest.mark.timeout(600)
def test_run_all_quick_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    expected = ["overhead", "latency", "control", "server_scale", "long_run", "trainer_memory", "export"]
    assert report["errors"] == {}
    for name in expected:
        assert name in report["results"], name
        assert _numbers(report["results"][name]), f"{name} has no numbers"
        assert report["markdown"][name].count("|") > 4, f"{name} has no table"
    r = report["results"]
    assert r["latency"]["latency_ms"]["p95"] is not None
    assert r["control"]["latency_ms"]["p95"] is not None
    assert r["server_scale"]["sustained"]["fanout_ms"]["p99"] is not None
    assert r["long_run"]["metrics_first_ms"] > 0 and r["long_run"]["db_bytes_per_var_sample"] > 0
    assert r["trainer_memory"]["runs"][0]["queue_max_bytes"] <= r["trainer_memory"]["runs"][0]["bound_bytes"]
    assert [e["format"] for e in r["export"]["exports"]] == ["parquet", "csv"]
    assert all(e["bytes"] > 0 and e["seconds"] > 0 for e in r["export"]["exports"])
    assert all(c["step_ratio"] > 0 for c in r["overhead"][0]["configs"].values())
    for title in (
        "Training overhead",
        "Live latency",
        "Control latency",
        "Server scale",
        "Long runs",
        "Trainer memory",
        "Export",
    ):
        assert title in md
