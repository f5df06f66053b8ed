"""The diagnosis benchmark's CI smoke run: real training against a real server, a well-formed report,
and a scorer that does fail when the alerts are wrong."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.diagnosis import LEADING, score  # noqa: E402
from bench.zoo import KINDS  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("diag") / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.diagnosis", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| kind | runs | recall | precision |" in proc.stdout  # the markdown table
    return dict(json.loads(out.read_text()))


@pytest.mark.timeout(400)
def test_quick_report_has_every_figure_per_kind(report: dict[str, Any]) -> None:
    s = report["summary"]
    assert set(s["per_kind"]) == set(KINDS)
    for k in s["per_kind"].values():
        assert {"runs", "recall", "precision", "median_lead", "late_or_missing"} <= set(k)
    assert set(s["confusion"]) == {*KINDS, "healthy"}
    assert all(set(row) == {*KINDS, *LEADING, "none"} for row in s["confusion"].values())
    assert s["healthy"]["runs"] == 2 and s["healthy"]["steps"] > 100
    assert s["healthy"]["false_alarms_per_1000_steps"] is not None
    runs = report["runs"]
    assert len(runs) == 5 and not s["errors"], s["errors"]
    assert all(r["steps_reported"] > 0 and "alerts" in r for r in runs)  # every run trained and reported


@pytest.mark.timeout(400)
def test_quick_zoo_is_diagnosed_right(report: dict[str, Any]) -> None:
    """The promise itself, on the seeded quick zoo: each pathology named, the healthy runs quiet."""
    t = report["summary"]["targets"]
    assert t["every_pathological_run_named_right"], report["summary"]["misses"]
    assert t["no_warning_or_critical_on_healthy_runs"], report["summary"]["misses"]
    assert t["alert_before_event_when_event_at_step_3_or_later"], report["summary"]["misses"]


@pytest.mark.timeout(400)
def test_the_scorer_fails_when_the_alerts_are_wrong(report: dict[str, Any]) -> None:
    runs = copy.deepcopy(report["runs"])
    sick = next(r for r in runs if r["kind"] == "frozen_batchnorm")
    sick["alerts"] = []  # missed
    healthy = next(r for r in runs if r["kind"] == "healthy")
    healthy["alerts"] = [
        {
            "kind": "exploding_gradients",
            "severity": "critical",
            "step": 5,
            "last_step": 5,
            "layer": None,
            "count": 1,
            "message": "false alarm",
        }
    ]
    s = score(runs)
    assert s["per_kind"]["frozen_batchnorm"]["recall"] == 0.0
    assert s["confusion"]["frozen_batchnorm"]["none"] == 1
    assert s["per_kind"]["exploding_gradients"]["precision"] < 1.0
    assert s["confusion"]["healthy"]["exploding_gradients"] == 1
    assert not s["targets"]["every_pathological_run_named_right"]
    assert not s["targets"]["no_warning_or_critical_on_healthy_runs"]
    assert s["healthy"]["false_alarms_per_1000_steps"] > 0
