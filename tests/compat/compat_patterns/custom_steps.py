"""Custom train_steps: the VAE (its own loss trackers), a GAN (two optimizers), compute_loss overriding."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from harness import Ctx, digits, pattern


class Sampling(keras.layers.Layer):
    """z = mean + exp(log_var / 2) * eps, with a seeded noise generator."""

    def __init__(self) -> None:
        super().__init__()
        self.seed_generator = keras.random.SeedGenerator(7)

    def call(self, inputs: Any) -> Any:
        mean, log_var = inputs
        eps = keras.random.normal(keras.ops.shape(mean), seed=self.seed_generator)
        return mean + keras.ops.exp(0.5 * log_var) * eps


class VAE(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        inp = keras.Input((64,))
        h = keras.layers.Dense(16, activation="relu")(inp)
        mean, log_var = keras.layers.Dense(2)(h), keras.layers.Dense(2)(h)
        self.encoder = keras.Model(inp, [mean, log_var, Sampling()([mean, log_var])])
        self.decoder = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(64, activation="sigmoid")]
        )
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

    @property
    def metrics(self) -> list[Any]:
        return [self.total_loss_tracker]

    def train_step(self, data: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            mean, log_var, z = self.encoder(data)
            recon = self.decoder(z)
            recon_loss = keras.ops.mean(
                keras.ops.sum(keras.losses.binary_crossentropy(data[..., None], recon[..., None]), axis=1)
            )
            kl = -0.5 * keras.ops.mean(keras.ops.sum(1 + log_var - mean**2 - keras.ops.exp(log_var), axis=1))
            total = recon_loss + kl
        grads = tape.gradient(total, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total)
        return {"loss": self.total_loss_tracker.result()}


@pattern(
    "keras-team/keras-io examples/generative/vae.py (custom train_step, Mean loss trackers)",
    loss_per_step=True,
)
def vae(ctx: Ctx) -> Any:
    x, _ = digits(128)
    model = VAE()
    model.compile(optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


class GAN(keras.Model):
    def __init__(self, latent: int = 4) -> None:
        super().__init__()
        self.latent = latent
        self.discriminator = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(16), keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)]
        )
        self.generator = keras.Sequential(
            [
                keras.Input((latent,)),
                keras.layers.Dense(16),
                keras.layers.LeakyReLU(0.2),
                keras.layers.Dense(64, activation="sigmoid"),
            ]
        )
        self.seed_generator = keras.random.SeedGenerator(3)

    def compile(self, d_optimizer: Any, g_optimizer: Any) -> None:
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, real: Any) -> dict[str, Any]:
        n = keras.ops.shape(real)[0]
        fake = self.generator(keras.random.normal((n, self.latent), seed=self.seed_generator))
        images = keras.ops.concatenate([fake, real], axis=0)
        labels = keras.ops.concatenate([keras.ops.ones((n, 1)), keras.ops.zeros((n, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        noise = keras.random.normal((n, self.latent), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(keras.ops.zeros((n, 1)), self.discriminator(self.generator(noise)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


@pattern("keras-team/keras-io guides/customizing_what_happens_in_fit.py (the GAN: d_optimizer, g_optimizer)")
def gan_two_optimizers(ctx: Ctx) -> Any:
    x, _ = digits(128)
    model = GAN()
    model.compile(
        d_optimizer=ctx.optimizer(keras.optimizers.Adam(3e-4)), g_optimizer=ctx.optimizer(keras.optimizers.Adam(3e-4))
    )
    model.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model


class CustomModel(keras.Model):
    """train_step overridden the guide's way: compute_loss, apply_gradients, metrics updated by hand."""

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        for metric in self.metrics:
            metric.update_state(loss) if metric.name == "loss" else metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


@pattern("keras-team/keras-io guides/custom_train_step_in_tensorflow.py (a first simple example)")
def custom_train_step(ctx: Ctx) -> Any:
    x, y = digits(96)
    inputs = keras.Input((64,))
    model = CustomModel(inputs, keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(inputs)))
    model.compile(
        optimizer=ctx.optimizer(keras.optimizers.Adam(1e-3)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=ctx.callbacks())
    return model
