"""The host half of a step: weight scans after a bad step, BatchNorm samples, the origin replay."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.config import MonitorConfig
from gradwatch.trainer_hooks.graph_stats import GradientStats
from gradwatch.trainer_hooks.origin import OriginFinder
from gradwatch.trainer_hooks.session import RunSession


def make_session(stats: GradientStats, origin: OriginFinder | None = None) -> RunSession:
    # Never started: records stay in the transport's buffer, where the test reads them.
    config = MonitorConfig(server="http://127.0.0.1:9", max_buffer_mb=1, spool_mb=0)
    return RunSession(
        config, stats=stats, run_name="t", token="x" * 32, clip=("global_norm", None), meta={}, origin=origin
    )


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
    stats.bn._block = -1  # due again now, whatever the spacing says
    step_fn([tf.ones(2)])
    session.after_steps(2, 0)
    first, second = (r["bn"] for r in queued(session))
    assert first == [[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]]  # mean/min/max/change of each, at init
    mm = bn.moving_mean.numpy()
    assert second[0][:3] == pytest.approx([mm.mean(), mm.min(), mm.max()])
    assert second[0][3] == pytest.approx(np.sqrt(np.mean(mm**2)), rel=1e-5)  # moved from zeros


def test_sampling_is_spaced_by_steps_not_time():
    """The first reportable step of every block of EVERY: the same steps however slow each one is."""
    bn = keras.layers.BatchNormalization()
    bn.build((None, 4))
    stats = GradientStats([tf.Variable(np.ones(2, np.float32))], [bn])
    sampler = stats.bn
    due = [i for i in range(23) if sampler.due(i)]
    assert due == list(range(0, 23, sampler.EVERY))
    later = GradientStats([tf.Variable(np.ones(2, np.float32))], [bn]).bn
    assert [i for i in (3, 4, 9, 12, 13, 22) if later.due(i)] == [3, 9, 12, 22]  # sparse calls: once per block


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
