"""In-graph statistics and clipping checked against NumPy on small known gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.graph_stats import GradientStats

SHAPES = [(3, 4), (4,), (2, 2)]


def make_stats(mode: str = "global_norm", threshold: float | None = None, bn_layers=()):
    variables = [tf.Variable(np.ones(s, np.float32)) for s in SHAPES]
    stats = GradientStats(variables, bn_layers, mode, threshold)
    step_fn = tf.function(lambda grads: stats.process(grads, 0.01, loss=tf.constant(0.5))[0])
    return stats, step_fn


def known_grads(seed: int = 0, scale: float = 3.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in SHAPES]


def run(step_fn, stats, grads, step=0):
    out = step_fn([tf.constant(g) for g in grads])
    assert int(stats.read()[0][0]) == step
    return [o.numpy() for o in out], stats.layout.unpack(stats.read()[0])


def test_norms_and_no_clipping_without_threshold():
    stats, fn = make_stats(threshold=None)
    grads = known_grads()
    out, rec = run(fn, stats, grads)
    norms = np.array([np.linalg.norm(g) for g in grads])
    np.testing.assert_allclose(rec["grad_norm"], norms, rtol=1e-5)
    assert rec["global_norm"] == pytest.approx(np.sqrt((norms**2).sum()), rel=1e-5)
    assert rec["clip_scale"] == 1.0 and rec["clipped"] == 0.0
    assert rec["loss"] == 0.5 and rec["lr"] == pytest.approx(0.01)
    for o, g in zip(out, grads):
        np.testing.assert_array_equal(o, g)


def test_global_norm_clipping_matches_numpy():
    stats, fn = make_stats("global_norm", 1.0)
    grads = known_grads()
    out, rec = run(fn, stats, grads)
    gnorm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    expected = [g * (1.0 / gnorm) for g in grads]
    for o, e in zip(out, expected):
        np.testing.assert_allclose(o, e, rtol=1e-5)
    assert rec["clip_scale"] == pytest.approx(1.0 / gnorm, rel=1e-4)
    assert rec["clipped"] == 1.0
    assert np.isnan(rec["clipped_fraction"])  # only meaningful in value mode


def test_per_variable_norm_clipping_matches_numpy():
    stats, fn = make_stats("norm", 2.0)
    grads = known_grads()
    grads[1] = grads[1] * 0.01  # this one stays under the threshold
    out, rec = run(fn, stats, grads)
    post = []
    for o, g in zip(out, grads):
        n = np.linalg.norm(g)
        e = g * min(1.0, 2.0 / n)
        np.testing.assert_allclose(o, e, rtol=1e-5)
        post.append(np.linalg.norm(e))
    pre = np.sqrt(sum(np.linalg.norm(g) ** 2 for g in grads))
    assert rec["clip_scale"] == pytest.approx(np.sqrt(np.sum(np.square(post))) / pre, rel=1e-4)


def test_value_clipping_and_fraction():
    stats, fn = make_stats("value", 1.5)
    grads = known_grads()
    out, rec = run(fn, stats, grads)
    for o, g in zip(out, grads):
        np.testing.assert_allclose(o, np.clip(g, -1.5, 1.5), rtol=1e-6)
    total = sum(g.size for g in grads)
    over = sum(int((np.abs(g) > 1.5).sum()) for g in grads)
    assert rec["clipped_fraction"] == pytest.approx(over / total)
    assert rec["clipped"] == (1.0 if over else 0.0)


def test_threshold_change_applies_without_retrace():
    stats, fn = make_stats("global_norm", 100.0)
    grads = known_grads()
    _, rec = run(fn, stats, grads, step=0)
    assert rec["clipped"] == 0.0
    stats.set_clip("norm", 0.1)
    out, rec = run(fn, stats, grads, step=1)
    assert rec["clip_mode"] == 1.0 and rec["clip_threshold"] == pytest.approx(0.1)
    assert all(np.linalg.norm(o) == pytest.approx(0.1, rel=1e-4) for o in out)
    assert stats.traces == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_counts(bad):
    stats, fn = make_stats("global_norm", 1.0)
    grads = known_grads()
    grads[0][0, 0] = bad
    grads[0][1, 2] = bad
    grads[2][0, 1] = np.nan
    _, rec = run(fn, stats, grads)
    nan_expected = [int(np.isnan(g).sum()) for g in grads]
    inf_expected = [int(np.isinf(g).sum()) for g in grads]
    assert rec["grad_nan"].tolist() == nan_expected
    assert rec["grad_inf"].tolist() == inf_expected
    assert not np.isfinite(rec["global_norm"])
    assert rec["grad_norm"][1] == pytest.approx(np.linalg.norm(grads[1]), rel=1e-5)


def test_healthy_steps_skip_the_counts_and_a_bad_step_is_flagged():
    stats, fn = make_stats()
    grads = known_grads()
    _, rec = run(fn, stats, grads)
    assert rec["grad_nan"].sum() == 0 and rec["unhealthy"] == 0.0
    bad = [g.copy() for g in grads]
    bad[0][0, 0] = np.nan
    _, rec = run(fn, stats, bad, step=1)
    assert rec["unhealthy"] == 1.0 and rec["grad_nan"].tolist() == [1, 0, 0]


def test_none_gradients_are_passed_through():
    stats, fn = make_stats("global_norm", 0.5)
    grads = known_grads()
    tensors = [tf.constant(grads[0]), None, tf.constant(grads[2])]
    out = fn(tensors)
    assert out[1] is None
    rec = stats.layout.unpack(stats.read()[0])
    assert rec["grad_norm"][1] == 0.0
    total = np.sqrt(np.linalg.norm(grads[0]) ** 2 + np.linalg.norm(grads[2]) ** 2)
    assert rec["global_norm"] == pytest.approx(total, rel=1e-5)
