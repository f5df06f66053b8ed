"""A training process for the offline tests: ``python offline_trainer.py LOG_DIR STEPS NAN_BATCH MODE``.

Trains a small classifier (after the keras-io "simple MNIST convnet" recipe, dense here:
https://keras.io/examples/vision/mnist_convnet/) for ``STEPS`` steps with ``GradientMonitor``
(``mode``: offline, or online at $GRADWATCH_SERVER), one batch of NaN inputs at ``NAN_BATCH`` (guarded,
so training goes on). Sleeps a little per step so a parent can kill it mid-run; prints
``step N`` as it goes.
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np

from gradwatch import GradientMonitor

log_dir, steps, nan_batch, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).standard_normal((steps * 16, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
x[nan_batch * 16 : (nan_batch + 1) * 16] = np.nan


class Slow(keras.callbacks.Callback):  # type: ignore[misc]
    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        print(f"step {batch}", flush=True)
        time.sleep(0.02)  # a paced run: the test kills it mid-run


monitor = GradientMonitor(mode=mode, log_dir=log_dir, run_name="offline-test", guard_nonfinite=True)
model.fit(x, y, batch_size=16, epochs=1, shuffle=False, callbacks=[monitor, Slow()], verbose=0)
print("done", flush=True)
