"""The leading divergence rule on synthetic runs: a runaway learning rate is warned of within a few steps of
its onset; warm-ups, ramps and restarts are not; the verdict does not depend on how steps were framed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gradwatch.server.alerts.engine import RunAlerts
from gradwatch.server.alerts.params import settings
from gradwatch.server.alerts.rules import RunInfo
from simtrainer import record

from gradwatch.protocol import StepRecord

VARS = ["m/d1/kernel", "m/d1/bias", "m/d2/kernel", "m/d2/bias", "m/out/kernel", "m/out/bias"]


def run(lr_of: Callable[[int], float], steps: int, seed: int = 0, every: int = 1) -> list[StepRecord]:
    """Records whose update ratio follows the learning rate (x ~3 per unit lr, with 10 % noise), as SGD's does."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(0, steps, every):
        lr = lr_of(step)
        ratios = [3.0 * lr * float(rng.lognormal(0.0, 0.1)) * (1 + i) for i in range(len(VARS))]
        out.append(
            StepRecord.model_validate(
                record(
                    step, n_vars=len(VARS), lr=lr, update_ratio=ratios, grad_norm=[1.0] * len(VARS), global_norm=2.45
                )
            )
        )
    return out


def raised(records: list[StepRecord], frame: int = 7) -> list[Any]:
    e = RunAlerts(1, RunInfo(VARS, []), {"diverging": settings("diverging")})
    changes = []
    for i in range(0, len(records), frame):
        changes += e.observe_steps(records[i : i + frame])
    return list({id(c.alert): c.alert for c in changes if c.alert.kind == "diverging"}.values())


def runaway(onset: int, growth: float, lr: float = 0.01) -> Callable[[int], float]:
    return lambda s: lr * growth ** max(0, s - onset)


@pytest.mark.parametrize("growth", [1.05, 1.15, 1.3])
def test_a_runaway_is_warned_of_within_a_few_steps_of_its_onset(growth: float) -> None:
    alerts = raised(run(runaway(60, growth), 60 + int(math.log(1e4) / math.log(growth))))
    (alert,) = alerts
    assert 60 < alert.step <= 60 + 8
    e = alert.evidence
    assert e["lr_growth"] == pytest.approx(growth, rel=1e-3)
    assert e["update_ratio"] >= 2e-3 and e["update_ratio_growth"] > 1.02
    assert alert.severity == "warning"
    assert "of the weights per step and growing" in alert.message and "lower the learning rate" in alert.message
    assert alert.remedies[0].startswith("Lower the learning rate")


@pytest.mark.parametrize(
    "lr_of",
    [
        lambda s: 0.03 * min(1.0, (s + 1) / 30),  # linear warm-up
        lambda s: 0.03 * min(1.0, (s + 1) / 100),  # a long one
        lambda s: 0.03 * (1 + math.cos(math.pi * (s % 50) / 50)) / 2 + 1e-4,  # cosine with restarts
        lambda s: 0.03 * 0.3 ** (s // 40),  # ReduceLROnPlateau
        lambda s: 0.01,  # constant
    ],
    ids=["warmup30", "warmup100", "restarts", "plateau", "constant"],
)
def test_healthy_schedules_raise_nothing(lr_of: Callable[[int], float]) -> None:
    assert raised(run(lr_of, 300)) == []


def test_the_verdict_does_not_depend_on_how_steps_were_framed() -> None:
    records = run(runaway(40, 1.1), 140, seed=3)
    seen = {frame: [(a.step, a.layer) for a in raised(records, frame)] for frame in (1, 3, 7, 16, 140)}
    assert len(set(map(tuple, seen.values()))) == 1, seen


def test_every_nth_step_reported_counts_growth_per_step() -> None:
    (alert,) = raised(run(runaway(60, 1.1), 160, every=3))
    assert alert.evidence["lr_growth"] == pytest.approx(1.1, rel=1e-3)
    assert 60 < alert.step <= 60 + 3 * 8


def test_no_update_ratio_no_verdict() -> None:
    records = [StepRecord.model_validate(record(s, n_vars=len(VARS), lr=0.01 * 1.2**s)) for s in range(60)]
    assert raised(records) == []
