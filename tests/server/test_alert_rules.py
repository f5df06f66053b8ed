"""Each alert rule on synthetic series, in-process: fires when and where it should, and only then."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradwatch.server.alerts.engine import RULE_TYPES, RunAlerts
from gradwatch.server.alerts.params import settings
from gradwatch.server.alerts.rules import Nonfinite, RunInfo
from simtrainer import record

from gradwatch.protocol import NonfiniteOrigin, Probe, StepRecord

VARS = ["m/d1/kernel", "m/d1/bias", "m/d2/kernel", "m/d2/bias", "m/out/kernel", "m/out/bias"]
BN_VARS = ["m/d1/kernel", "m/bn/gamma", "m/bn/beta", "m/out/kernel"]


def rec(step: int, norms: list[float] | np.ndarray, **kw: Any) -> StepRecord:
    n = len(norms)
    grad = [float(x) if np.isfinite(x) else ("NaN" if np.isnan(x) else "Infinity") for x in norms]
    with np.errstate(over="ignore"):
        gn = float(np.sqrt(np.sum(np.square(np.asarray(norms, dtype=float)))))
    base = record(step, n_vars=n, grad_norm=grad, global_norm=gn if np.isfinite(gn) else "NaN")
    base.update(kw)
    return StepRecord.model_validate(base)


def healthy(rng: np.random.Generator, n_vars: int = len(VARS)) -> np.ndarray:
    return rng.lognormal(0.0, 0.5, n_vars)


def feed(engine: RunAlerts, records: list[StepRecord], batch: int = 7) -> list[Any]:
    out = []
    for i in range(0, len(records), batch):
        out += engine.observe_steps(records[i : i + batch])
    return out


def engine(variables: list[str] = VARS, bn: list[str] | None = None, **rules: dict[str, float]) -> RunAlerts:
    return RunAlerts(1, RunInfo(variables, bn or []), {k: settings(k, params=v) for k, v in rules.items()})


# ----------------------------------------------------------------------------- healthy


def test_healthy_noisy_run_raises_nothing():
    rng = np.random.default_rng(0)
    recs = []
    for s in range(3000):
        norms = healthy(rng)
        if s % 57 == 56:  # a small last batch of each epoch: one big outlier step
            norms = norms * 60
        clipped = bool(rng.random() < 0.5)
        recs.append(
            rec(s, norms, clipped=clipped, clip_threshold=1.0, clip_scale=0.5 if clipped else 1.0, bn=[], lr=0.01)
        )
    assert feed(engine(), recs) == []


# ----------------------------------------------------------------------------- exploding


def test_growth_into_nan_is_exploding_before_nonfinite():
    rng = np.random.default_rng(1)
    recs = [rec(s, healthy(rng)) for s in range(100)]
    norms = healthy(rng)
    s = 100
    while True:
        norms = norms.copy()
        norms[2] *= 3.0  # m/d2/kernel runs away, the rest follow more slowly
        norms[[0, 4]] *= 1.5
        if norms[2] > 1e30:  # then the step overflows into NaN
            break
        recs.append(rec(s, norms))
        s += 1
    first_nan = s
    recs.append(rec(first_nan, [np.nan] * len(VARS), grad_nan=[5] * len(VARS), loss="NaN", loss_nonfinite=True))
    changes = feed(engine(), recs, batch=50)
    kinds = [(c.alert.kind, c.alert.step, c.alert.layer) for c in changes]
    assert [k for k, _, _ in kinds] == ["exploding_gradients", "nonfinite"], kinds
    exploding = changes[0].alert
    assert exploding.step < first_nan and exploding.layer == "m/d2/kernel"
    assert exploding.severity == "critical" and "m/d2/kernel" in exploding.message
    assert changes[1].alert.step == first_nan and changes[1].alert.layer == "m/d1/kernel"


@pytest.mark.parametrize("spikes, fires", [(3, False), (4, True), (8, True)])
def test_exploding_needs_sustain_consecutive_spikes(spikes, fires):
    rng = np.random.default_rng(2)
    recs = [rec(s, healthy(rng), loss=0.5) for s in range(200)]  # a loss that no longer falls
    for k in range(spikes):
        norms = healthy(rng)
        norms[4] *= 200
        recs.append(rec(200 + k, norms, loss=0.5))
    recs += [rec(200 + spikes + s, healthy(rng), loss=0.5) for s in range(50)]
    changes = feed(engine(), recs, batch=13)
    if not fires:
        assert changes == []
        return
    (c,) = [c for c in changes if c.event != "resolved"]
    assert c.alert.kind == "exploding_gradients" and c.alert.step == 203 and c.alert.layer == "m/out/kernel"
    assert c.alert.last_step == 199 + spikes


def test_exploding_waits_for_warmup():
    rng = np.random.default_rng(3)
    recs = [rec(s, healthy(rng) * (1000 if 5 <= s < 15 else 1)) for s in range(60)]
    assert feed(engine(), recs) == []


@pytest.mark.parametrize("hits, fires", [(2, False), (3, True)])
def test_exploding_global_norm_far_above_clip_threshold(hits, fires):
    rng = np.random.default_rng(4)
    recs = []
    for s in range(150):
        norms = healthy(rng) * 0.3
        if s in (100, 110, 120)[:hits]:
            norms = norms * 0 + 5.0  # global norm ~12 > 10 x 1.0 on a single step, no sustained spike
        recs.append(rec(s, norms, clip_threshold=1.0, clipped=True, clip_scale=0.1))
    changes = [
        c for c in feed(engine(exploding_gradients={"sustain": 50}), recs) if c.alert.kind == "exploding_gradients"
    ]
    assert [c.alert.step for c in changes] == ([120] if fires else [])
    if fires:
        assert changes[0].alert.evidence["rule"] == "clip_multiple"


# ----------------------------------------------------------------------------- vanishing


@pytest.mark.parametrize("steps, factor, fires", [(29, 1e-4, False), (30, 1e-4, True), (60, 2e-3, False)])
def test_vanishing_sustained_ratio(steps, factor, fires):
    rng = np.random.default_rng(5)
    recs = [rec(s, healthy(rng)) for s in range(50)]
    for k in range(steps):
        norms = healthy(rng)
        norms[2] *= factor / 2  # d2 starved first ...
        norms[0] *= factor  # ... and d1 too: d1 is the earliest
        recs.append(rec(50 + k, norms))
    recs += [rec(50 + steps + s, healthy(rng)) for s in range(10)]
    changes = feed(engine(), recs)
    if not fires:
        assert changes == []
        return
    (c,) = changes
    a = c.alert
    assert (a.kind, a.step, a.layer, a.severity) == ("vanishing_gradients", 79, "m/d1/kernel", "warning")
    assert a.layers == ["m/d1/kernel", "m/d2/kernel"] and a.evidence["last_layer"] == "m/out/kernel"
    assert any("ReLU" in r for r in a.remedies) and any("residual" in r for r in a.remedies)


# ----------------------------------------------------------------------------- nonfinite


def test_nonfinite_layer_skipped_steps_and_origin():
    rng = np.random.default_rng(6)
    e = RunAlerts(1, RunInfo(VARS, [], guard_nonfinite=True))
    recs = [rec(s, healthy(rng)) for s in range(10)]
    bad = healthy(rng)
    bad[3] = bad[5] = np.nan
    nan = [0, 0, 0, 4, 0, 2]
    recs += [rec(10 + k, bad, grad_nan=nan, skipped=True) for k in range(3)]
    (c,) = feed(e, recs, batch=20)
    a = c.alert
    assert (a.kind, a.severity, a.step, a.last_step, a.layer) == ("nonfinite", "critical", 10, 12, "m/d2/bias")
    assert a.layers == ["m/d2/bias", "m/out/bias"] and a.evidence["skipped_steps"] == 3
    assert "skipped 3 steps" in a.message and "m/d2/bias" in a.message
    change = e.origin(NonfiniteOrigin(type="nonfinite_origin", step=10, source="features", detail="column 3"))
    assert change is not None and change.alert is a
    assert a.evidence["origin_source"] == "features" and "input features" in a.message and "column 3" in a.message


def test_nonfinite_loss_or_weights_only_has_no_layer_and_origin_can_come_first():
    e = engine()
    early = e.origin(NonfiniteOrigin(type="nonfinite_origin", step=3, source="layer", layer="m/d2"))
    assert early is None
    recs = [rec(s, [1.0] * len(VARS)) for s in range(3)] + [rec(3, [1.0] * len(VARS), weight_nonfinite=7)]
    (c,) = feed(e, recs)
    assert c.alert.layer is None and c.alert.evidence["weight_nonfinite"] == 7
    assert "forward output of layer m/d2" in c.alert.message


def nan_loss_run(bad: set[int], n: int) -> list[StepRecord]:
    return [rec(s, [1.0] * len(VARS), loss="NaN" if s in bad else 0.5, loss_nonfinite=s in bad) for s in range(n)]


def events(changes: list[Any]) -> list[tuple[str | None, int, int, str, int | None]]:
    return [(c.event, c.alert.count, c.alert.step, c.alert.state, c.alert.resolved_step) for c in changes]


def test_a_condition_back_within_its_clear_steps_continues_the_open_alert():
    e = engine()
    changes = feed(e, nan_loss_run({5, 6, 20}, 30), batch=1)
    assert events(changes) == [("raised", 1, 5, "open", None)]
    a = changes[0].alert
    assert a.last_step == 20 and a.latest is not None and a.latest["step"] == 20


@pytest.mark.parametrize("batch", [1, 7, 40])
def test_an_alert_resolves_after_its_clear_steps_and_a_return_is_its_next_episode(batch):
    """nonfinite clears after 50 steps: NaN at 5-6 resolves at 56; NaN again at 100 opens episode 2."""
    assert Nonfinite.clear_steps == 50
    e = engine()
    changes = feed(e, nan_loss_run({5, 6, 100}, 200), batch=batch)
    assert events(changes) == [
        ("raised", 1, 5, "resolved", 56),
        ("resolved", 1, 5, "resolved", 56),
        ("reopened", 2, 100, "resolved", 150),
        ("resolved", 2, 100, "resolved", 150),
    ]
    first, second = changes[0].alert, changes[2].alert
    assert first is not second and (first.layer, first.kind) == (second.layer, second.kind)
    assert e.open == {} and [c.opened for c in changes] == [True, False, True, False]


def test_every_kind_states_its_clear_steps():
    for kind, rule in RULE_TYPES.items():
        assert isinstance(rule.__dict__.get("clear_steps"), int) and rule.clear_steps > 0, kind


def test_a_resolved_alert_loaded_back_stays_resolved_and_numbers_the_next_episode():
    e = engine()
    changes = feed(e, nan_loss_run({5}, 60), batch=10)
    stored = [changes[0].alert]
    assert stored[0].state == "resolved"
    again = RunAlerts(1, RunInfo(VARS, []), existing=stored)
    (c,) = again.observe_steps([rec(61, [1.0] * len(VARS), loss="NaN", loss_nonfinite=True)])
    assert (c.event, c.alert.count, c.alert.step) == ("reopened", 2, 61)


def test_the_evidence_that_raised_an_alert_stays_as_it_was_and_updates_carry_their_own_step():
    """The growth rule raises at the step the norm had grown enough; later batches are updates, not rewrites."""
    rng = np.random.default_rng(1)
    recs = [rec(s, healthy(rng)) for s in range(100)]
    norms = healthy(rng)
    for s in range(100, 112):
        norms = norms * 4.0
        recs.append(rec(s, norms))
    changes = feed(engine(), recs, batch=3)
    (c,) = [c for c in changes if c.alert.kind == "exploding_gradients"]
    a = c.alert
    raised_norm = float(recs[a.step - 0].global_norm)
    assert a.evidence["global_norm"] == pytest.approx(raised_norm)
    assert f"{raised_norm:.3g}" in a.message and f"at step {a.step}" in a.message
    assert a.latest is not None and a.latest["step"] > a.step
    later = float(recs[a.latest["step"]].global_norm)
    assert a.latest["evidence"]["global_norm"] == pytest.approx(later)
    assert f"at step {a.latest['step']}" in a.latest["message"] and f"{later:.3g}" in a.latest["message"]


# ----------------------------------------------------------------------------- dead ReLU


def probe(step: int, dead: dict[str, float] | None = None, gap: dict[str, float] | None = None) -> Probe:
    return Probe(type="probe", step=step, dead_relu=dead or {}, bn_gap=gap or {})


@pytest.mark.parametrize(
    "shares, fires_at", [((0.6, 0.6), 200), ((0.6, 0.4, 0.6), None), ((0.5, 0.5), None), ((0.1, 0.7, 0.9, 0.9), 300)]
)
def test_dead_relu_sustained_share(shares, fires_at):
    e = engine()
    changes = []
    for i, share in enumerate(shares):
        changes += e.observe_probe(probe(100 * (i + 1), {"m/d1": share, "m/d2": 0.05}))
    if fires_at is None:
        assert changes == []
        return
    (c,) = changes
    assert (c.alert.kind, c.alert.step, c.alert.layer, c.alert.layers) == ("dead_relu", fires_at, "m/d1", ["m/d1"])
    assert "LeakyReLU" in " ".join(c.alert.remedies)


# ----------------------------------------------------------------------------- frozen BatchNorm


def bn_rec(step: int, delta: float, gamma: float = 0.3) -> StepRecord:
    row = [0.0, -1.0, 1.0, delta, 1.0, 0.5, 1.5, delta]
    return rec(step, [1.0, gamma, gamma, 1.0], bn=[row])


@pytest.mark.parametrize("frozen_steps, gamma, fires", [(19, 0.3, False), (20, 0.3, True), (40, 0.0, False)])
def test_frozen_batchnorm_moving_statistics(frozen_steps, gamma, fires):
    e = engine(BN_VARS, ["m/bn"])
    recs = [bn_rec(s, 0.01) for s in range(10)] + [bn_rec(10 + k, 0.0, gamma) for k in range(frozen_steps)]
    recs += [bn_rec(10 + frozen_steps, 0.01)]
    changes = feed(e, recs)
    if not fires:
        assert changes == []
        return
    (c,) = changes
    assert (c.alert.kind, c.alert.step, c.alert.layer) == ("frozen_batchnorm", 29, "m/bn")
    assert "training=True" in c.alert.message


def test_frozen_batchnorm_steps_without_bn_report_do_not_break_the_run():
    e = engine(BN_VARS, ["m/bn"])
    recs = []
    for s in range(60):
        recs.append(bn_rec(s, 0.0) if s % 2 == 0 else rec(s, [1.0, 0.3, 0.3, 1.0], bn=[]))
    (c,) = feed(e, recs)
    assert c.alert.step == 38  # the 20th BN-reporting step


@pytest.mark.parametrize(
    "gaps, start, fires_at",
    [((2.0, 2.0, 2.0), 600, 800), ((2.0, 2.0, 2.0), 100, None), ((2.0, 0.5, 2.0, 2.0), 600, None)],
)
def test_frozen_batchnorm_probe_gap(gaps, start, fires_at):
    e = engine(BN_VARS, ["m/bn"])
    changes = []
    for i, g in enumerate(gaps):
        changes += e.observe_probe(probe(start + 100 * i, gap={"m/bn": g}))
    assert [c.alert.step for c in changes] == ([fires_at] if fires_at else [])


# ----------------------------------------------------------------------------- clip saturated


@pytest.mark.parametrize("clipped_every, steps, fires", [(20, 150, True), (5, 300, False), (1000, 99, False)])
def test_clip_saturated(clipped_every, steps, fires):
    e = engine()
    recs = [
        rec(
            s,
            [0.5] * len(VARS),
            clip_threshold=0.5,
            clipped=s % clipped_every != 0,
            clip_scale=0.1 if s % clipped_every else 1.0,
        )
        for s in range(steps)
    ]
    changes = feed(e, recs, batch=9)
    if not fires:
        assert changes == []
        return
    (c,) = changes
    assert (c.alert.kind, c.alert.step, c.alert.layer) == ("clip_saturated", 99, None)
    assert c.alert.evidence["clipped_share"] >= 0.9 and c.alert.last_step == steps - 1


# ----------------------------------------------------------------------------- settings


def test_muted_rule_raises_nothing_and_params_retune():
    recs = [rec(s, [1.0] * len(VARS), loss="NaN") for s in range(3)]
    e = RunAlerts(1, RunInfo(VARS, []), {"nonfinite": settings("nonfinite", muted=True)})
    assert feed(e, recs) == []
    e2 = engine()
    e2.configure("clip_saturated", settings("clip_saturated", params={"window": 10, "fraction": 0.5}))
    clipped = [rec(s, [1.0] * len(VARS), clipped=True, clip_threshold=1.0, clip_scale=0.1) for s in range(10)]
    assert [c.alert.step for c in feed(e2, clipped)] == [9]


def test_a_wide_healthy_run_in_small_frames_raises_nothing():
    """200 variables x 1000 steps in frames of 10 records. What the rules cost is measured by
    ``python -m bench.server_cpu`` (docs/performance.md), not timed here: a test must not depend on load."""
    rng = np.random.default_rng(7)
    n_vars = 200
    variables = [f"m/l{i}/kernel" if i % 2 == 0 else f"m/l{i}/bias" for i in range(n_vars)]
    recs = [rec(s, healthy(rng, n_vars), clip_threshold=20.0, clipped=bool(s % 2), clip_scale=0.7) for s in range(1000)]
    e = engine(variables)
    assert feed(e, recs, batch=10) == []


def test_nonfinite_origin_of_the_first_bad_step_is_kept():
    # A run poisoned by its features at step 3 goes on producing NaN steps whose own
    # origins are "unknown" (the weights are poisoned by then): the alert keeps "features".
    e = engine()
    first = NonfiniteOrigin(type="nonfinite_origin", step=3, source="features", detail="2 non-finite values")
    later = NonfiniteOrigin(type="nonfinite_origin", step=4, source="unknown", detail="weights already poisoned")
    assert e.origin(first) is None and e.origin(later) is None  # both before the alert: the first is kept
    recs = [rec(s, [1.0] * len(VARS)) for s in range(3)]
    recs += [rec(s, [np.nan] * len(VARS), grad_nan=[1] * len(VARS)) for s in range(3, 6)]
    (c,) = feed(e, recs)
    assert c.alert.evidence["origin_source"] == "features" and c.alert.evidence["origin_step"] == 3
    assert e.origin(NonfiniteOrigin(type="nonfinite_origin", step=5, source="unknown")) is None
    assert c.alert.evidence["origin_source"] == "features" and "input features" in c.alert.message


# ----------------------------------------------------------------------------- issue 12: the zoo's findings


def kinds(changes: list[Any]) -> list[tuple[str, int, str]]:
    return [(c.alert.kind, c.alert.step, c.alert.severity) for c in changes]


def test_a_logged_loss_that_is_nan_with_finite_gradients_raises_nothing():
    """A custom train_step's loss comes from Keras' logs: a running mean, stale, NaN once any step was."""
    rng = np.random.default_rng(20)
    recs = [rec(s, healthy(rng), loss="NaN" if s >= 50 else 0.5) for s in range(80)]  # no loss_nonfinite flag
    assert feed(engine(), recs) == []


def test_a_loss_scaler_overflow_is_information_and_never_pauses_unless_it_persists():
    rng = np.random.default_rng(21)
    e = engine()  # guard off: a skipped step is the mixed-precision loss scaler's
    inf = [0, 3, 0, 0, 0, 0]
    recs = [rec(s, healthy(rng), grad_inf=inf, global_norm="Infinity", skipped=True) for s in range(2)]
    recs += [rec(s, healthy(rng)) for s in range(2, 40)]
    (c,) = feed(e, recs)
    assert (c.alert.kind, c.alert.severity, c.opened) == ("nonfinite", "info", False)
    assert "loss scaler skipped 2" in c.alert.message and "guard" not in c.alert.message
    # ... and when it goes on skipping, it is critical, and raised (what pause_on acts on)
    later = [rec(s, healthy(rng), grad_inf=inf, global_norm="Infinity", skipped=True) for s in range(40, 50)]
    (c2,) = feed(e, later, batch=10)
    assert (c2.alert.severity, c2.opened, c2.alert.step) == ("critical", True, 45)
    assert "6 steps in a row" in c2.alert.message


def test_divergence_within_five_steps_is_exploding_before_the_nan():
    """Seed 003's shape: norms 374 -> 2,920 -> 1e5 -> 4e8 -> 3e15 -> NaN, no history to compare with."""
    e = engine()
    recs = [rec(s, np.full(len(VARS), g / np.sqrt(len(VARS)))) for s, g in enumerate([374, 2920, 1e5, 4e8, 3e15])]
    recs.append(rec(5, [np.nan] * len(VARS), grad_nan=[9] * len(VARS), loss_nonfinite=True))
    got = kinds(feed(e, recs, batch=1))
    assert got[0][:2] == ("exploding_gradients", 3) and got[1][:2] == ("nonfinite", 5), got
    nan_alert = e.open[("nonfinite", "m/d1/kernel")]
    assert nan_alert.evidence["preceded_by"] == "exploding_gradients"
    assert "after gradients had been exploding since step 3" in nan_alert.message
    assert nan_alert.remedies[0].startswith("Lower the learning rate")


def test_a_gradual_explosion_is_flagged_by_its_trend_well_before_it_is_10x():
    rng = np.random.default_rng(22)
    recs = [rec(s, healthy(rng), loss=1.0) for s in range(100)]
    for k in range(80):  # x1.06 a step: 10x the usual level after ~40 steps; the loss stops falling
        recs.append(rec(100 + k, healthy(rng) * 1.06**k, loss=1.0 + 0.01 * k))
    changes = [c for c in feed(engine(), recs) if c.alert.kind == "exploding_gradients"]
    assert changes and changes[0].alert.evidence["rule"] == "trend"
    assert changes[0].alert.step <= 100 + 32, changes[0].alert.step  # before the 10x spike rule could
    # ... but the same climb while the loss keeps falling is a model learning, not diverging
    falling = [rec(s, healthy(rng), loss=2.0 - 0.01 * s) for s in range(100)]
    falling += [rec(100 + k, healthy(rng) * 1.06 ** min(k, 25), loss=1.0 - 0.01 * k) for k in range(60)]
    assert feed(engine(), falling) == []


def test_norms_growing_tenfold_while_the_loss_falls_are_a_model_learning():
    """Healthy Adam/ResNet runs: the global norm grows 10x over a few dozen steps while the loss falls."""
    rng = np.random.default_rng(26)
    recs = [rec(s, healthy(rng), loss=2.3) for s in range(60)]
    recs += [rec(60 + k, healthy(rng) * min(1.15**k, 20.0), loss=2.3 - 0.02 * k) for k in range(60)]
    assert [c for c in feed(engine(), recs) if c.alert.kind == "exploding_gradients"] == []


def test_a_small_variable_jumping_while_the_global_norm_barely_moves_is_not_exploding():
    """The healthy LSTM/transformer false alarm: key/kernel 20x while the global norm is 3.3x its usual."""
    rng = np.random.default_rng(23)
    names = ["m/embed/kernel", "m/mha/query/kernel", "m/mha/key/kernel", "m/out/kernel"]
    base = np.array([0.3, 0.01, 0.0015, 0.2])
    recs = [rec(s, base * rng.lognormal(0, 0.1, 4)) for s in range(100)]
    recs += [rec(100 + k, base * np.array([3.3, 3.0, 20.0, 3.3])) for k in range(10)]
    assert feed(engine(names), recs) == []


def test_the_blame_goes_to_the_variable_that_moved_the_global_norm():
    rng = np.random.default_rng(24)
    names = ["m/d1/kernel", "m/mha/key/kernel", "m/out/kernel"]
    base = np.array([1.0, 0.02, 0.5])
    recs = [rec(s, base * rng.lognormal(0, 0.1, 3)) for s in range(100)]
    recs += [rec(100 + k, base * np.array([15.0, 200.0, 2.0])) for k in range(6)]
    (c,) = [c for c in feed(engine(names), recs) if c.alert.kind == "exploding_gradients"]
    assert c.alert.layer == "m/d1/kernel", c.alert.message


def test_per_variable_clipping_compares_each_variable_with_its_threshold():
    """clipnorm (mode "norm") bounds each variable: a global norm over 10x the threshold is no explosion."""
    names = [f"m/l{i}/kernel" for i in range(150)]
    recs = [rec(s, np.full(150, 0.9), clip_mode="norm", clip_threshold=1.0) for s in range(100)]
    assert feed(engine(names), recs) == []


def test_a_hidden_layer_whose_gradients_are_exactly_zero_is_dead_relu():
    names = ["m/d1/kernel", "m/d1/bias", "m/d2/kernel", "m/d2/bias", "m/out/kernel", "m/out/bias"]
    recs = [rec(s, [0.0, 0.0, 0.0, 0.0, 0.0, 0.05]) for s in range(30)]  # d2 dead: nothing reaches d1 either
    (c,) = feed(engine(names), recs)
    assert (c.alert.kind, c.alert.layer, c.alert.step) == ("dead_relu", "m/d2", 19)
    assert c.alert.layers == ["m/d1", "m/d2"] and "exactly zero" in c.alert.message


def test_vanishing_against_the_output_bias_sees_a_network_starved_both_ways():
    """Tiny initial weights shrink the last kernel's gradient too; the output bias still carries the error."""
    recs = [rec(s, [1e-6, 1e-6, 2e-6, 1e-6, 3e-6, 0.08]) for s in range(40)]
    (c,) = feed(engine(), recs)
    assert (c.alert.kind, c.alert.layer) == ("vanishing_gradients", "m/d1/kernel")
    assert c.alert.evidence["last_layer"] == "m/out/bias"


def test_an_attention_query_kernel_that_learns_slowly_is_not_vanishing():
    names = ["m/embed/kernel", "m/mha/query/kernel", "m/mha/key/kernel", "m/ffn/kernel", "m/out/kernel"]
    recs = [rec(s, [0.4, 2e-5, 3e-5, 0.3, 0.5]) for s in range(100)]
    assert feed(engine(names), recs) == []


def test_clipping_that_trims_steps_a_little_is_not_saturated():
    recs = [rec(s, [0.5] * len(VARS), clip_threshold=0.5, clipped=True, clip_scale=0.45) for s in range(200)]
    assert feed(engine(), recs) == []


def test_a_loss_running_away_with_the_learning_rate_is_exploding_though_the_norm_stays_bounded():
    """Adam/RMSprop under a runaway learning rate: the updates, not the gradients, grow."""
    rng = np.random.default_rng(25)
    recs = [rec(s, healthy(rng), loss=2.3, lr=1e-3) for s in range(100)]
    recs += [rec(100 + k, healthy(rng), loss=2.3 * 1.5**k, lr=1e-3 * 10**k) for k in range(12)]
    (c,) = [c for c in feed(engine(), recs) if c.alert.kind == "exploding_gradients"]
    assert c.alert.evidence["rule"] == "loss" and c.alert.evidence["lr_rise"] >= 10
    assert c.alert.step < 100 + 6  # before the loss is 10x (k = 6)
    assert "learning rate rose" in c.alert.message


def test_batchnorm_statistics_never_updated_are_frozen_from_the_first_sample():
    e = engine(BN_VARS, ["m/bn"])
    untouched = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    recs = [rec(s, [1.0, 0.3, 0.3, 1.0], bn=[untouched] if s % 5 == 1 else []) for s in range(4)]
    (c,) = feed(e, recs, batch=1)
    assert (c.alert.kind, c.alert.step, c.alert.layer) == ("frozen_batchnorm", 1, "m/bn")
    moved = [0.0, -0.1, 0.1, 0.0, 1.0, 0.9, 1.1, 0.0]  # the same deltas, but the statistics did move once
    e2 = engine(BN_VARS, ["m/bn"])
    assert feed(e2, [rec(s, [1.0, 0.3, 0.3, 1.0], bn=[moved]) for s in range(1, 4)], batch=1) == []


def test_docs_state_each_kinds_clear_steps_as_declared():
    text = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    table = text[text.index("| kind | clear steps |") :].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", table, re.M))
    assert {k: int(v) for k, v in rows.items()} == {k: r.clear_steps for k, r in RULE_TYPES.items()}
