"""Sparse (``Embedding``) gradients: what is reported is the norm of the gradient the optimizer applies.

The oracle is ``tf.norm(tf.convert_to_tensor(g))`` of the very gradients handed to the
monitor: the dense gradient, repeated token ids summed. The norm of ``g.values`` (ids
not summed) is far enough from it on these batches for the comparison to tell them apart.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.graph_stats import GradientStats

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

from .test_monitor_integration import Api

VOCAB, LENGTH, BATCH, STEPS = 30, 12, 16, 4


def text_data(n: int = STEPS * BATCH) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=(n, LENGTH)).astype("int32")  # six ids in 12 slots: many repeats per row
    return x, (x[:, 0] > 2).astype("int32")


def text_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )


def dense_norms(grads: list[Any]) -> list[float]:
    return [float(tf.norm(tf.convert_to_tensor(g))) for g in grads]


@pytest.mark.parametrize("how", ["eager", "tf.function", "xla"])
def test_loop_reports_the_norm_of_the_summed_gradient(gradwatch_server: Any, how: str) -> None:
    server = gradwatch_server()
    x, y = text_data()
    model = text_model()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=server.url, token=server.token, flush_timeout=10)
    expected: list[list[float]] = []
    values_norms: list[float] = []
    with mon.watch(model, keras.optimizers.SGD(0.5)) as watch:

        def step(xb: Any, yb: Any) -> list[Any]:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)
            return list(grads)

        run_step = step if how == "eager" else tf.function(step, jit_compile=how == "xla")
        for i in range(STEPS):
            grads = run_step(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
            assert isinstance(grads[0], tf.IndexedSlices)
            expected.append(dense_norms(grads))
            values_norms.append(float(tf.norm(grads[0].values)))
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    assert m["step"] == list(range(STEPS))
    got = np.array([[decode_float(v) for v in m["grad_norm"][w.path]] for w in model.trainable_variables]).T
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        [decode_float(g) for g in m["global_norm"]], np.sqrt((np.array(expected) ** 2).sum(1)), rtol=1e-5
    )
    # The test can tell: the values' norm (ids not summed) is well off the gradient's.
    assert np.all(np.abs(np.array(values_norms) / got[:, 0] - 1) > 0.05)


def test_fit_reports_the_norm_of_the_summed_gradient(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    x, y = text_data()
    model = text_model()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(0.05), loss_fn)
    expected: list[list[float]] = []

    class Expect(keras.callbacks.Callback):
        # The batch's gradient at the weights the step starts from.
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            xb, yb = x[batch * BATCH : (batch + 1) * BATCH], y[batch * BATCH : (batch + 1) * BATCH]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            expected.append(dense_norms(tape.gradient(loss, model.trainable_variables)))

    mon = GradientMonitor(server=server.url, token=server.token, flush_timeout=10)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[Expect(), mon])
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    got = np.array([[decode_float(v) for v in m["grad_norm"][w.path]] for w in model.trainable_variables]).T
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        [decode_float(g) for g in m["global_norm"]], np.sqrt((np.array(expected) ** 2).sum(1)), rtol=1e-5
    )


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_nonfinite_counts_are_those_of_the_dense_gradient(jit: bool) -> None:
    width = 3
    table = tf.Variable(np.zeros((VOCAB, width), np.float32))
    stats = GradientStats([table])
    nan, inf = np.nan, np.inf
    # Rows for ids 2, 5, 2, 7, 7: id 2 carries a NaN twice (one NaN row of the gradient, not two), id 7 an
    # Inf and a -Inf (a NaN once summed) and an Inf alone.
    values = np.array(
        [[nan, 1, 1], [1, 1, 1], [nan, 1, 1], [inf, inf, 1], [-inf, 1, 1]],
        np.float32,
    )
    grad = tf.IndexedSlices(tf.constant(values), tf.constant([2, 5, 2, 7, 7]), tf.constant([VOCAB, width]))
    step = tf.function(lambda g: stats.process([g], 0.1)[1], jit_compile=jit)
    assert not bool(step(grad))
    row = stats.layout.unpack(stats.read()[0])
    dense = tf.convert_to_tensor(grad).numpy()
    assert row["grad_nan"][0] == np.isnan(dense).sum() == 2
    assert row["grad_inf"][0] == np.isinf(dense).sum() == 1


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_a_large_table_is_measured_exactly_without_densifying(jit: bool) -> None:
    rng = np.random.default_rng(0)
    table = tf.Variable(np.zeros((20_000, 8), np.float32))
    stats = GradientStats([table])
    ids = rng.integers(0, 50, size=400).astype(np.int32)
    grad = tf.IndexedSlices(
        tf.constant(rng.standard_normal((400, 8)).astype(np.float32)), tf.constant(ids), tf.constant([20_000, 8])
    )
    step = tf.function(lambda g: stats.process([g], 0.1)[0], jit_compile=jit)
    out = step(grad)
    assert isinstance(out[0], tf.IndexedSlices)  # no clipping in force: handed on as it came
    row = stats.layout.unpack(stats.read()[0])
    assert row["grad_norm"][0] == pytest.approx(float(tf.norm(tf.convert_to_tensor(grad))), rel=1e-5)
    graph = step.get_concrete_function(grad).graph
    biggest = max(
        (o.shape.num_elements() or 0 for op in graph.get_operations() for o in op.outputs if o.dtype == tf.float32),
        default=0,
    )
    assert biggest < 20_000 * 8  # nothing the size of the table
