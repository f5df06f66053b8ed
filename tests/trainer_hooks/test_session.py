"""The host half of a step: weight scans after a bad step, BatchNorm samples, the origin replay."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.graph_stats import GradientStats
from gradwatch.trainer_hooks.origin import OriginFinder
from gradwatch.trainer_hooks.pacing import Pacer
from gradwatch.trainer_hooks.session import RunSession


def make_session(stats: GradientStats, origin: OriginFinder | None = None) -> RunSession:
    # Never started: records stay in the transport's buffer, where the test reads them.
    return RunSession(stats=stats, run_name="t", server="http://127.0.0.1:9", token="x" * 32, every=1,
                      clip_mode="global_norm", clip_threshold=None, meta={}, max_buffer_bytes=2**20,
                      origin=origin)


def queued(session: RunSession) -> list[dict[str, Any]]:
    return [session._encode(item.payload) for item in session.transport.outbox.records]


def test_weights_are_scanned_after_a_bad_step_until_clean():
    variables = [tf.Variable(np.ones((3, 4), np.float32)), tf.Variable(np.ones(4, np.float32))]
    stats = GradientStats(variables)
    step_fn = tf.function(lambda g: stats.process(g, 0.01, loss=tf.constant(0.5))[0])
    session = make_session(stats)
    good = [tf.ones((3, 4)), tf.ones(4)]
    bad = [tf.fill((3, 4), np.nan), tf.ones(4)]
    plan = [(good, None), (bad, np.nan), (good, None), (good, 1.0), (good, None)]
    for step, (grads, fill) in enumerate(plan):
        step_fn(grads)
        if fill is not None:  # what the update does to the weights after the step
            variables[0].assign(np.full((3, 4), fill, np.float32))
        session.after_steps(step + 1, 0)
    assert [r["weight_nonfinite"] for r in queued(session)] == [0, 12, 12, 0, 0]


def test_batchnorm_is_sampled_on_the_host_with_its_change():
    bn = keras.layers.BatchNormalization(momentum=0.5)
    bn.build((None, 4))
    stats = GradientStats([tf.Variable(np.ones(2, np.float32))], [bn])
    step_fn = tf.function(lambda g: stats.process(g, 0.01)[0])
    session = make_session(stats)
    step_fn([tf.ones(2)])
    session.after_steps(1, 0)
    bn(np.arange(16, dtype=np.float32).reshape(4, 4), training=True)
    stats.bn.pacer.last = -np.inf  # due again now, whatever the pacing says
    step_fn([tf.ones(2)])
    session.after_steps(2, 0)
    first, second = (r["bn"] for r in queued(session))
    assert first == [[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]]  # mean/min/max/change of each, at init
    mm = bn.moving_mean.numpy()
    assert second[0][:3] == pytest.approx([mm.mean(), mm.min(), mm.max()])
    assert second[0][3] == pytest.approx(np.sqrt(np.mean(mm**2)), rel=1e-5)  # moved from zeros


def test_sampling_paces_itself_by_its_cost():
    bn = keras.layers.BatchNormalization()
    bn.build((None, 4))
    stats = GradientStats([tf.Variable(np.ones(2, np.float32))], [bn])
    sampler, pacer = stats.bn, stats.bn.pacer
    assert sampler.due(0.0)
    sampler.sample()
    assert 0 < pacer.interval <= sampler.MAX_INTERVAL
    assert not sampler.due(pacer.last)  # just sampled
    assert sampler.due(pacer.last + pacer.interval + 1e-9)
    sampler.sample()
    assert [sampler.due(pacer.last) for _ in range(sampler.MAX_STEPS)][-2:] == [False, True]  # every N steps


@pytest.mark.parametrize(("cost", "expected"), [(0.001, 0.2), (1.0, 30.0)])
def test_pacer_keeps_to_its_budget_within_bounds(cost, expected):
    pacer = Pacer(0.005, min_calls=3, max_interval=30.0)
    assert pacer.due(0.0)  # the first opportunity
    pacer.took(0.0, cost)
    assert pacer.interval == pytest.approx(expected)
    assert not any(pacer.due(expected * 0.99) for _ in range(100))
    assert pacer.due(expected)
    pacer.took(expected, cost * 10)  # a slower sample (interference) does not stretch the spacing
    assert pacer.interval == pytest.approx(expected)
    assert [pacer.due(1e9) for _ in range(3)] == [False, False, True]  # never more often than every 3 calls


@pytest.mark.parametrize(("poison", "source"), [("features", "features"), ("layer", "layer")])
def test_origin_of_a_bad_step(poison, source):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d1"), keras.layers.Dense(2, name="d2")])
    origin = OriginFinder(model)
    stats = GradientStats(model.trainable_variables)
    x = np.ones((2, 3), np.float32)
    if poison == "features":
        x[0, 1] = np.nan
    else:  # finite weights whose product overflows in the second layer
        model.get_layer("d1").kernel.assign(np.ones((3, 4), np.float32))
        model.get_layer("d2").kernel.assign(np.full((4, 2), 3e38, np.float32))

    @tf.function
    def step(x, y):
        grads = [tf.fill(tf.shape(v), np.nan) for v in model.trainable_variables]
        stats.process(grads, 0.01, inputs=(x, y), origin=origin)

    session = make_session(stats, origin)
    step(tf.constant(x), tf.zeros(2))
    session.after_steps(1, 0)
    (message,) = [m for _, m in session.transport.outbox.control if m.type == "nonfinite_origin"]
    assert message.source == source, message.detail
    if source == "layer":
        assert message.layer.endswith("d2")
