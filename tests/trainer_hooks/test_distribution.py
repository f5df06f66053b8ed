"""MirroredStrategy on two logical CPU devices: one stream per run, norms of the aggregated gradient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from .test_monitor_integration import Api

pytestmark = pytest.mark.timeout(300)

# Logical devices must be configured before TensorFlow initialises: a fresh process.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from gradwatch import GradientMonitor

    url, token, mode = sys.argv[1:4]  # fit, loop, or unbuilt (a loop whose model is built by its first step)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = [] if mode == "unbuilt" else [keras.Input((8,))]
        model = keras.Sequential([*inputs, keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = []

    class Expect(keras.callbacks.Callback):
        # The whole batch's gradient at the weights the step starts from.
        def on_train_batch_begin(self, batch, logs=None):
            xb, yb = x[batch * 32 : (batch + 1) * 32], y[batch * 32 : (batch + 1) * 32]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            expected.append(float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))))

    mon = GradientMonitor(url, token, clip_threshold=0.5, guard_nonfinite=True)  # a warning: cannot skip here
    if mode == "fit":
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[Expect(), mon])
    else:  # a hand-written loop: each replica's step calls the hook
        per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
        with mon.watch(model, model.optimizer) as watch:

            @tf.function
            def train_step(batch):
                def replica_step(xb, yb):
                    with tf.GradientTape() as tape:
                        losses = per_example(yb, model(xb, training=True))
                        loss = tf.nn.compute_average_loss(losses, global_batch_size=32)
                    grads = tape.gradient(loss, model.trainable_variables)
                    watch.apply_gradients(grads, model.trainable_variables, loss=loss)

                strategy.run(replica_step, args=batch)

            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
            for batch, replicated in enumerate(strategy.experimental_distribute_dataset(dataset)):
                Expect().on_train_batch_begin(batch)
                train_step(replicated)
            assert watch.steps == 4, watch.steps  # one host call per step, not one per replica
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "expected": expected}))
    """
)


def train(server: Any, mode: str) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT in a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-c", SCRIPT, server.url, server.token, mode]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)


@pytest.mark.parametrize("mode", ["fit", "loop"])
def test_mirrored_strategy_reports_the_aggregated_gradient(gradwatch_server: Any, mode: str) -> None:
    server = gradwatch_server()
    proc = train(server, mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("guard_nonfinite cannot skip steps under a tf.distribute strategy") == 1
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    api = Api(server)
    runs = api.get("/api/runs")
    assert len(runs) == 1  # one stream per run, not one per replica
    m = api.get(f"/api/runs/{runs[0]['id']}/metrics")
    assert m["step"] == [0, 1, 2, 3]
    assert m["global_norm"] == pytest.approx(out["expected"], rel=1e-4)
    # clipping applied to the aggregated gradient: scale = threshold / global norm
    for g, s in zip(m["global_norm"], m["clip_scale"]):
        assert s == pytest.approx(min(1.0, 0.5 / g), rel=1e-4)


def test_a_model_not_built_before_a_replica_step_gets_an_error_naming_the_fix(gradwatch_server: Any) -> None:
    # Plain Keras fails here too (its optimizer cannot be built inside a replica's step), obscurely.
    proc = train(gradwatch_server(), "unbuilt")
    assert proc.returncode != 0
    assert "must be built before the first step (start it with keras.Input" in proc.stderr, proc.stderr[-3000:]
