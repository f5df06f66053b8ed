"""The lead-time benchmark's smoke run (real training against a real server) and its scorer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.lead_time import dead_shares, score  # noqa: E402


def result(name: str, schedule: str, diverged_at: int | None, alert_step: int | None) -> dict[str, Any]:
    alerts = (
        []
        if alert_step is None
        else [{"kind": "diverging", "severity": "warning", "step": alert_step, "layer": None, "message": "m"}]
    )
    lead = diverged_at - alert_step if diverged_at is not None and alert_step is not None else None
    return {
        "name": name,
        "schedule": schedule,
        "arch": "mlp",
        "opt": "adam",
        "onset": 10,
        "diverged_at": diverged_at,
        "alerts": alerts,
        "lead": lead,
    }


def test_the_scorer_counts_leads_misses_and_false_alarms() -> None:
    s = score(
        [
            result("runaway a", "runaway", 40, 20),  # lead 20
            result("runaway b", "runaway", 30, 32),  # warned after: unwarned
            result("runaway c", "runaway", 50, None),  # never warned
            result("runaway d", "runaway", None, None),  # never diverged: not counted
            result("healthy linear_warmup x", "linear_warmup", None, 5),  # a false alarm
            result("healthy plateau y", "plateau", None, None),
        ]
    )
    assert s["diverged"] == 3 and s["median_lead"] == 0  # 20, 0, 0
    assert sorted(s["unwarned"]) == ["runaway b", "runaway c"]
    assert s["healthy_false_alarm_runs"] == 1 and s["per_schedule"]["linear_warmup"]["loud"] == 1
    assert s["median_onset_to_divergence"] == 30
    assert not any(s["targets"].values())


def test_a_dead_relu_on_a_layer_measured_dying_is_a_finding_not_a_false_alarm() -> None:
    dying = result("healthy cosine_warmup x", "cosine_warmup", None, 50)
    dying["alerts"][0].update(kind="dead_relu", layer="ffn")
    dying["dead_shares"] = {"ffn": 0.84}
    alive = result("healthy cosine_warmup y", "cosine_warmup", None, 60)
    alive["alerts"][0].update(kind="dead_relu", layer="ffn")
    alive["dead_shares"] = {"ffn": 0.2}  # the benchmark's own measure says most units live: a false alarm
    s = score([dying, alive])
    assert s["healthy_false_alarm_runs"] == 1 and s["false_alarms"][0].startswith("healthy cosine_warmup y")
    assert s["per_schedule"]["cosine_warmup"] == {"runs": 2, "loud": 1, "dying": 1}
    assert len(s["dying_relu_found"]) == 1


def test_dead_shares_measures_units_that_never_fire() -> None:
    import keras
    import numpy as np

    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu", name="half", bias_initializer="zeros")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    kernel = np.ones((4, 8), "float32")
    kernel[:, :4] = -1.0  # these four units see only negative sums of positive inputs
    model.get_layer("half").kernel.assign(kernel)
    x = np.random.default_rng(0).uniform(0.1, 1.0, (32, 4)).astype("float32")
    assert dead_shares(model, x) == {"half": 0.5}  # "out" has no ReLU: not measured


@pytest.mark.timeout(400)
def test_quick_run_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "lead.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.diagnosis", "--lead", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=380,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| architecture | momentum | adam | rmsprop |" in proc.stdout
    report = json.loads(out.read_text())
    runs = {r["schedule"]: r for r in report["runs"]}
    assert not report["summary"]["errors"], report["summary"]["errors"]
    assert runs["runaway"]["diverged_at"] is not None  # the ground truth saw it diverge
    assert runs["runaway"]["lead"] is not None and runs["runaway"]["lead"] > 0  # and it was warned of before
    assert report["summary"]["healthy_false_alarm_runs"] == 0
