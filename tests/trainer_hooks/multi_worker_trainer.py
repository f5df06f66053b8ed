"""One worker of a two-process MultiWorkerMirroredStrategy run (started by test_multi_worker.py).

    python multi_worker_trainer.py INDEX PORT0,PORT1 SERVER_URL TOKEN

A hand-written loop under ``monitor.watch``. Worker ``i`` trains on its half of
each global batch. It prints one JSON line: the steps it ran, its weights, and
(on the chief) the norm of the whole global batch's gradient before each of the
first steps, computed without the strategy, for the test to compare.
"""

from __future__ import annotations

import json
import os
import sys
import time

index, ports, url, token = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps(
    {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gradwatch import GradientMonitor  # noqa: E402

GLOBAL_BATCH, MAX_STEPS, CHECKED = 32, 3000, 8
workers = len(ports)
local_batch = GLOBAL_BATCH // workers
rng = np.random.default_rng(0)  # the same data on every worker; each takes its own slice
x = rng.standard_normal((GLOBAL_BATCH * 16, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int32")

strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.05)
per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")


def global_batch(k: int) -> tuple[np.ndarray, np.ndarray]:
    start = (k * GLOBAL_BATCH) % len(x)
    return x[start : start + GLOBAL_BATCH], y[start : start + GLOBAL_BATCH]


monitor = GradientMonitor(url, token, run_name="two-workers")
with monitor.watch(model, optimizer) as watch:

    @tf.function
    def train_step(xb: tf.Tensor, yb: tf.Tensor) -> None:
        def replica_step(xb: tf.Tensor, yb: tf.Tensor) -> None:
            with tf.GradientTape() as tape:
                losses = per_example(yb, model(xb, training=True))
                loss = tf.nn.compute_average_loss(losses, global_batch_size=GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            watch.apply_gradients(grads, model.trainable_variables, loss=loss)

        strategy.run(replica_step, args=(xb, yb))

    expected, steps = [], 0
    for k in range(MAX_STEPS):
        xg, yg = global_batch(k)
        if index == 0 and k < CHECKED:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(per_example(yg, model(xg, training=True)))
            expected.append(float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))))
        mine = slice(index * local_batch, (index + 1) * local_batch)
        train_step(tf.constant(xg[mine]), tf.constant(yg[mine]))
        steps += 1
        if watch.stop_requested:
            break
        time.sleep(0.01)  # a slow run, so the test's commands land mid-run

weights = [float(w) for v in model.trainable_variables for w in np.ravel(v.numpy())]
print(json.dumps({"index": index, "steps": steps, "weights": weights, "expected": expected}), flush=True)
