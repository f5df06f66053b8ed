"""Training with the monitor is training without it, bit for bit, under each of Keras' clipping settings.

The oracle: the same fit twice under ``tf.config.experimental.enable_op_determinism()``,
without and with the monitor, and every weight and optimizer variable compared bitwise.
The monitor takes Keras' clipping over (to clip live from the page), so it must repeat
Keras' arithmetic and hand the optimizer the same kind of tensor (an ``Embedding``
gradient: dense after global-norm clipping, sparse otherwise); with gradient
accumulation it clips the averaged gradient of each update step, where Keras does.
Also: the user's clipping settings read as set inside ``fit`` and ``watch()``, and the
non-finite guard under a one-replica ``MirroredStrategy``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

from .test_monitor_integration import BATCH, Api, data, sequential
from .test_sparse_norms import text_data, text_model

CLIPPING = [
    {"global_clipnorm": 0.05},
    {"clipnorm": 0.05},
    {"clipvalue": 0.002},
    {"gradient_accumulation_steps": 2, "global_clipnorm": 0.05},
]


def dense_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return sequential()


@pytest.fixture
def deterministic() -> Iterator[None]:
    was = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was:  # the rest of the test process runs as it would have
        tf_config.disable_op_determinism()


def train(
    build: Any, x: np.ndarray, y: np.ndarray, options: dict[str, Any], callbacks: list[Any], jit: bool = False
) -> keras.Model:
    model = build()
    model.compile(
        keras.optimizers.Adam(0.01, **options),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
    return model


def assert_bitwise_equal(got: keras.Model, want: keras.Model) -> None:
    pairs = [*zip(got.weights, want.weights), *zip(got.optimizer.variables, want.optimizer.variables)]
    assert len(pairs) == len(got.weights) + len(want.optimizer.variables)
    for g, w in pairs:
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=w.path)


@pytest.mark.parametrize("options", CLIPPING, ids=lambda o: ",".join(o))
def test_embedding_model_trains_bitwise_alike(gradwatch_server: Any, deterministic: None, options: dict) -> None:
    server = gradwatch_server()
    x, y = text_data()
    plain = train(text_model, x, y, options, [])
    mon = GradientMonitor(server=server.url, token=server.token, flush_timeout=10)
    watched = train(text_model, x, y, options, [mon])
    assert_bitwise_equal(watched, plain)
    config = {k: v for k, v in watched.optimizer.get_config().items() if k != "name"}
    assert config == {k: v for k, v in plain.optimizer.get_config().items() if k != "name"}
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    steps = len(m["step"])
    assert steps == 2 * len(x) // BATCH
    every = options.get("gradient_accumulation_steps")
    if every:
        # Micro-steps only accumulate: nothing clipped there; the update steps clip the average.
        update = [(s + 1) % every == 0 for s in m["step"]]
        assert m["micro_step"] == [not u for u in update]
        assert not any(c for c, u in zip(m["clipped"], update) if not u)
        assert any(m["clipped"])
        assert all((decode_float(n) > 0) if u else n is None for n, u in zip(m["accumulated_norm"], update))
    else:
        assert not any(m["micro_step"]) and set(m["accumulated_norm"]) == {None}


@pytest.mark.parametrize("options", CLIPPING[:3], ids=lambda o: ",".join(o))
def test_dense_model_under_xla_trains_bitwise_alike(gradwatch_server: Any, deterministic: None, options: dict) -> None:
    server = gradwatch_server()
    x, y = data(n=4 * BATCH)
    plain = train(dense_model, x, y, options, [], jit=True)
    mon = GradientMonitor(server=server.url, token=server.token, flush_timeout=10)
    watched = train(dense_model, x, y, options, [mon], jit=True)
    assert_bitwise_equal(watched, plain)


def loop_train(x: np.ndarray, y: np.ndarray, monitor: GradientMonitor | None) -> list[np.ndarray]:
    """A hand-written tf.function loop with Adam(global_clipnorm), through ``watch`` when monitored."""
    model = text_model()
    optimizer = keras.optimizers.Adam(0.01, global_clipnorm=0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    watch = monitor.watch(model, optimizer) if monitor is not None else None

    @tf.function
    def step(xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if watch is None:
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        else:
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)

    with watch if watch is not None else contextlib.nullcontext():
        for i in range(len(x) // BATCH):
            step(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    return [np.asarray(v) for v in [*model.weights, *optimizer.variables]]


def test_loop_with_global_norm_clipping_trains_bitwise_alike(gradwatch_server: Any, deterministic: None) -> None:
    server = gradwatch_server()
    x, y = text_data()
    plain = loop_train(x, y, None)
    watched = loop_train(x, y, GradientMonitor(server=server.url, token=server.token, flush_timeout=10))
    assert len(plain) == len(watched)
    for got, want in zip(watched, plain):
        np.testing.assert_array_equal(got, want)


def test_the_users_clipping_reads_as_set_inside_watch_and_fit(gradwatch_server: Any, tmp_path: Path) -> None:
    server = gradwatch_server()
    x, y = data(n=2 * BATCH)
    model = dense_model()
    optimizer = keras.optimizers.Adam(0.01, global_clipnorm=2.0)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mon = GradientMonitor(server=server.url, token=server.token, flush_timeout=10)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with mon.watch(model, optimizer) as watch:
        with tf.GradientTape() as tape:
            loss = loss_fn(y[:BATCH], model(x[:BATCH], training=True))
        watch.apply_gradients(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        assert optimizer.global_clipnorm == 2.0
        assert optimizer.get_config()["global_clipnorm"] == 2.0
        model.save(tmp_path / "in_watch.keras")
    seen: list[Any] = []

    class SaveMidFit(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            seen.append((optimizer.global_clipnorm, optimizer.get_config()["global_clipnorm"]))
            model.save(tmp_path / "in_fit.keras")

    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon, SaveMidFit()])
    assert set(seen) == {(2.0, 2.0)}
    for name in ("in_watch.keras", "in_fit.keras"):
        reloaded = keras.models.load_model(tmp_path / name)
        assert reloaded.optimizer.global_clipnorm == 2.0, name
        assert reloaded.optimizer.clipnorm is None and reloaded.optimizer.clipvalue is None


def test_guard_nonfinite_under_a_one_replica_mirrored_strategy(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    x, y = data(n=4 * BATCH)
    x[BATCH + 1, 0] = np.nan  # the second step's gradients are NaN
    strategy = tf.distribute.MirroredStrategy()
    assert strategy.num_replicas_in_sync == 1
    with strategy.scope():
        model = dense_model()
        model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mon = GradientMonitor(server=server.url, token=server.token, flush_timeout=10, guard_nonfinite=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[mon])
    declined = [w for w in caught if "guard_nonfinite cannot skip steps" in str(w.message)]
    assert len(declined) == 1, [str(w.message) for w in caught]
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    assert m["step"] == list(range(8))
    assert sum(per_step[1] for per_step in m["nonfinite"].values()) > 0  # counted and reported...
    assert not any(m["skipped"])  # ... not skipped
