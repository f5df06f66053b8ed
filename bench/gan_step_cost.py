"""The cost of the monitor inside a GAN's compiled train step (two optimizers), in microseconds per step.

    python -m bench.gan_step_cost [--steps 600] [--json PATH]

The method of ``bench.step_cost``: the compiled train functions of a plain and of a
monitored GAN are called directly on one fixed batch, alternating step by step, and the
difference of the medians is what the statistics of both optimizers (two rings, one
shared step counter, trainer_hooks/multi_optimizer.py) add to the graph.

The GAN is the shape of the end-to-end GAN of keras-io's guide "Customizing what happens
in fit()" (guides/custom_train_step_in_tensorflow.py): ``compile(d_optimizer=...,
g_optimizer=...)``, the discriminator updated on real and generated images, then the
generator; written here with Dense nets on 28x28 random images, batch 128.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from bench._common import write_json
from bench.step_cost import report

LATENT, PIXELS, BATCH = 64, 784, 128


class GAN(keras.Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.discriminator = keras.Sequential(
            [keras.Input((PIXELS,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(1)]
        )
        self.generator = keras.Sequential(
            [keras.Input((LATENT,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(PIXELS)]
        )
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def compile(self, d_optimizer: Any, g_optimizer: Any) -> None:
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def train_step(self, real: Any) -> dict[str, Any]:
        n = tf.shape(real)[0]
        both = tf.concat([self.generator(tf.random.normal((n, LATENT))), real], axis=0)
        labels = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(both))
        d_vars = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((n, 1)), self.discriminator(self.generator(tf.random.normal((n, LATENT)))))
        g_vars = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return {"loss": d_loss + g_loss}


def compiled_step(monitored: bool) -> Any:
    """A warmed-up zero-argument step function of a fresh GAN, monitored or not."""
    from gradwatch import GradientMonitor

    keras.utils.set_random_seed(0)
    model = GAN()
    model.compile(keras.optimizers.Adam(2e-4), keras.optimizers.Adam(2e-4))
    x = np.random.default_rng(0).random((BATCH, PIXELS), dtype=np.float32)
    data = iter(tf.data.Dataset.from_tensors(x).repeat())
    model.make_train_function()
    if monitored:
        monitor = GradientMonitor(server="http://127.0.0.1:9", token="x" * 32)  # never connects
        monitor.set_model(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monitor.on_train_begin()
    train = model.train_function

    def step() -> None:
        float(train(data)["loss"])

    for _ in range(20):  # tracing and warm-up
        step()
    if monitored:  # both optimizers' statistics are in the step, or this measures nothing
        stats = monitor.lifecycle.hook.stats if monitor.lifecycle.hook is not None else None
        assert stats is not None and set(getattr(stats, "groups", ())) == {"d", "g"}, stats
    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gan_step_cost", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    steps = {"plain": compiled_step(False), "monitored": compiled_step(True)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    write_json(args.json, {"model": "gan", "steps": args.steps, "variants": report("gan", times)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
