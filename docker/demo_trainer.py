"""Demo trainer for docker-compose: a small MLP on scikit-learn's digits, streaming to ``$GRADWATCH_SERVER``.

Environment: ``GRADWATCH_SERVER`` (e.g. ``http://server:8765``), ``GRADWATCH_TOKEN`` (the server's token),
optional ``GRADWATCH_RUN_NAME``, ``EPOCHS`` (default 200) and ``STEPS_PER_SECOND`` (default 20; 0 = as fast
as possible).
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

from gradwatch import GradientMonitor


class Pace(keras.callbacks.Callback):
    def __init__(self, steps_per_second: float) -> None:
        super().__init__()
        self.delay = 1.0 / steps_per_second if steps_per_second > 0 else 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.delay:
            time.sleep(self.delay)


def main() -> None:
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    monitor = GradientMonitor(
        server=os.environ["GRADWATCH_SERVER"],  # the token comes from $GRADWATCH_TOKEN
        run_name=os.environ.get("GRADWATCH_RUN_NAME", "digits-mlp (docker)"),
        clip_threshold=1.0,
    )
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=int(os.environ.get("EPOCHS", "200")),
        verbose=2,
        callbacks=[monitor, Pace(float(os.environ.get("STEPS_PER_SECOND", "20")))],
    )
    print("accuracy:", float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y)))


if __name__ == "__main__":
    main()
