"""A GAN's ``train_step`` updates with optimizers of its own: every one of them is watched, in one run.

The GAN follows the "Wrapping up: an end-to-end GAN example" section of keras-io's guide
"Customizing what happens in fit()" (guides/custom_train_step_in_tensorflow.py, also the
shape of examples/generative/dcgan_overriding_train_step.py): ``compile(d_optimizer=...,
g_optimizer=...)`` after ``super().compile()``, discriminator then generator updated in
each step. Written here with Dense nets on sklearn's digits. The WGAN-GP variant
(examples/generative/wgan_gp.py) updates the discriminator several times per step.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.clipping import CLIP_MODE_IDS
from gradwatch.trainer_hooks.graph_stats import GradientStats
from gradwatch.trainer_hooks.multi_optimizer import GroupedStats, find_optimizers, group_name, group_stats
from sklearn.datasets import load_digits
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.protocol import Command

from .test_monitor_integration import Api as BaseApi

LATENT = 8
BATCH = 64


class GAN(keras.Model):  # type: ignore[misc]
    def __init__(self, discriminator: keras.Model, generator: keras.Model, d_steps: int = 1) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.d_steps = d_steps
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, d_optimizer: Any, g_optimizer: Any) -> None:
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    @property
    def metrics(self) -> list[Any]:
        return [self.d_loss_tracker, self.g_loss_tracker]

    def train_step(self, real: Any) -> dict[str, Any]:
        n = tf.shape(real)[0]
        for _ in range(self.d_steps):
            fake = self.generator(tf.random.normal((n, LATENT)))
            both = tf.concat([fake, real], axis=0)
            labels = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
            with tf.GradientTape() as tape:
                d_loss = self.loss_fn(labels, self.discriminator(both))
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        with tf.GradientTape() as tape:
            fooled = self.discriminator(self.generator(tf.random.normal((n, LATENT))))
            g_loss = self.loss_fn(tf.zeros((n, 1)), fooled)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}


def digits() -> np.ndarray:
    return (load_digits().data / 16.0).astype("float32")[:512]  # 8 steps of 64


def gan(d_optimizer: Any, g_optimizer: Any, d_steps: int = 1) -> GAN:
    keras.utils.set_random_seed(0)
    discriminator = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)], name="discriminator"
    )
    generator = keras.Sequential(
        [keras.Input((LATENT,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(64)], name="generator"
    )
    model = GAN(discriminator, generator, d_steps)
    model.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer)
    return model


class Api(BaseApi):
    def run(self, name: str) -> dict[str, Any]:
        (run,) = [r for r in self.get("/api/runs") if r["name"] == name]
        return dict(self.get(f"/api/runs/{run['id']}"))

    def wait_status(self, name: str, status: str) -> dict[str, Any]:
        wait_until(
            lambda: [r for r in self.get("/api/runs") if r["name"] == name and r["status"] == status],
            15,
            message=f"run {name} to become {status}",
        )
        return self.run(name)


@pytest.fixture(scope="module")
def api(shared_server: Any) -> Api:
    return Api(shared_server)


class ClipAt(keras.callbacks.Callback):  # type: ignore[misc]
    """Posts commands from the page's side at batch ``at`` and holds the step until the trainer has them."""

    def __init__(self, api: Api, name: str, monitor: GradientMonitor, at: int, *commands: dict[str, Any]) -> None:
        super().__init__()
        self.api, self.name, self.monitor, self.at, self.commands = api, name, monitor, at, commands
        self.posted = threading.Event()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch != self.at:
            return
        wait_until(  # the hello is sent in the background
            lambda: any(r["name"] == self.name for r in self.api.get("/api/runs")),
            10,
            interval=0.02,
            message=f"run {self.name} to be listed",
        )
        run_id = self.api.run(self.name)["id"]
        for command in self.commands:
            r = self.api.client.post(f"/api/runs/{run_id}/commands", json=command)
            assert r.status_code == 202, r.text
        session = self.monitor.session
        assert session is not None
        wait_until(lambda: session.control.has_pending, 10, interval=0.01, message="the commands to reach the trainer")
        self.posted.set()


def test_find_optimizers_names_groups_and_skips_a_loss_scalers_inner_optimizer() -> None:
    model = gan(keras.optimizers.Adam(), keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))
    found = find_optimizers(model)
    assert list(found) == ["optimizer", "d", "g"]
    assert found["g"] is model.g_optimizer  # the scaler, whose apply the step calls; not its inner SGD
    assert group_name("generator_optimizer") == "generator"


def test_a_gan_reports_both_optimizers_in_one_run_with_one_row_per_step(shared_server: Any, api: Api) -> None:
    d_opt = keras.optimizers.Adam(1e-3, clipnorm=5.0)
    g_opt = keras.optimizers.Adam(1e-3)
    model = gan(d_opt, g_opt)
    x = digits()
    steps = len(x) // BATCH
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="gan")
    clip = ClipAt(api, "gan", mon, 3, {"type": "set_clip", "mode": "global_norm", "threshold": 1e-3})
    model.fit(x, batch_size=BATCH, epochs=2, verbose=0, callbacks=[mon, clip])  # monitor first: the run exists
    assert clip.posted.is_set()

    run = api.wait_status("gan", "idle")
    d_names = [v.path for v in model.discriminator.trainable_weights]
    g_names = [v.path for v in model.generator.trainable_weights]
    assert run["variables"] == d_names + g_names
    assert json.loads(run["meta"]["optimizer_groups"]) == {"d": len(d_names), "g": len(g_names)}
    m = api.get(f"/api/runs/{run['id']}/metrics")
    assert m["step"] == list(range(2 * steps))  # one row per train step, not one per optimizer update
    for name in d_names + g_names:
        assert all(norm > 0 for norm in m["grad_norm"][name]), name
    # The run adopted the discriminator optimizer's own clipnorm; set_clip from the page replaced it.
    by_step = dict(zip(m["step"], zip(m["clip_mode"], m["clip_threshold"], m["clipped"])))
    assert all(by_step[s][:2] == ("norm", 5.0) for s in range(4))
    assert all(by_step[s][0] == "global_norm" and by_step[s][1] == pytest.approx(1e-3) for s in range(5, 2 * steps))
    assert all(by_step[s][2] for s in range(5, 2 * steps))

    # Both optimizers really updated, and are exactly as the user had them.
    assert int(d_opt.iterations.numpy()) == int(g_opt.iterations.numpy()) == 2 * steps
    for opt in (d_opt, g_opt, model.optimizer):
        assert "apply" not in vars(opt) and "scale_loss" not in vars(opt)
    assert d_opt.clipnorm == 5.0 and g_opt.clipnorm is None

    # A second fit continues the run without a retrace, and one without the monitor trains as usual.
    assert mon.stats is not None
    traces = mon.stats.traces
    model.fit(x, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])
    assert mon.stats.traces == traces
    api.wait_status("gan", "idle")
    assert api.get(f"/api/runs/{run['id']}/metrics")["step"] == list(range(3 * steps))
    model.fit(x, batch_size=BATCH, epochs=1, verbose=0)
    assert int(g_opt.iterations.numpy()) == 4 * steps
    mon.close(5)


def test_wgan_style_several_discriminator_updates_are_still_one_step(shared_server: Any, api: Api) -> None:
    d_opt, g_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
    model = gan(d_opt, g_opt, d_steps=3)
    x = digits()
    steps = len(x) // BATCH
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="wgan")
    model.fit(x, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])
    run = api.wait_status("wgan", "idle")
    m = api.get(f"/api/runs/{run['id']}/metrics")
    assert m["step"] == list(range(steps))
    assert int(d_opt.iterations.numpy()) == 3 * steps and int(g_opt.iterations.numpy()) == steps
    assert all(n > 0 for name in run["variables"] for n in m["grad_norm"][name])
    mon.close(5)


def test_clip_and_learning_rate_commands_can_name_one_optimizer_group(shared_server: Any, api: Api) -> None:
    d_opt, g_opt = keras.optimizers.Adam(1e-3, clipnorm=5.0), keras.optimizers.Adam(1e-3)
    model = gan(d_opt, g_opt)
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="gan-groups")
    commands = (
        {"type": "set_clip", "mode": "global_norm", "threshold": 1e-3, "group": "g"},
        {"type": "set_lr", "lr": 0.5, "group": "d"},
        {"type": "set_clip", "threshold": 1.0, "group": "critic"},
    )
    model.fit(
        digits(), batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon, ClipAt(api, "gan-groups", mon, 2, *commands)]
    )
    run = api.wait_status("gan-groups", "idle")
    acks = {c["id"]: c for c in api.get(f"/api/runs/{run['id']}/commands")}
    clip_g, lr_d, unknown = (acks[i] for i in sorted(acks))
    assert clip_g["state"] == lr_d["state"] == "applied" and clip_g["group"] == "g"
    assert unknown["state"] == "rejected" and "'critic'" in unknown["detail"] and "['d', 'g']" in unknown["detail"]

    assert isinstance(mon.stats, GroupedStats)
    d_stats, g_stats = mon.stats.groups["d"], mon.stats.groups["g"]
    assert float(g_stats.clip_threshold.numpy()) == pytest.approx(1e-3)  # the generator's only
    assert float(d_stats.clip_threshold.numpy()) == 5.0 and int(d_stats.clip_mode.numpy()) == CLIP_MODE_IDS["norm"]
    assert float(d_opt.learning_rate.numpy()) == 0.5 and float(g_opt.learning_rate.numpy()) == pytest.approx(1e-3)
    m = api.get(f"/api/runs/{run['id']}/metrics")
    applied = clip_g["applied_step"]
    assert m["clipped"] == [s >= applied for s in m["step"]]  # the generator's gradients clipped from then on
    assert d_opt.clipnorm == 5.0 and "apply" not in vars(d_opt) and "apply" not in vars(g_opt)
    mon.close(5)


def test_a_group_on_a_run_with_one_optimizer_is_refused_by_the_trainer_and_by_the_protocol() -> None:
    with pytest.raises(ValueError, match="takes no parameters"):
        Command(type="pause", group="d")
    with pytest.raises(ValueError, match="one optimizer: leave 'group' out"):
        group_stats(GradientStats([tf.Variable([1.0])]), "d")


class FailAt(keras.callbacks.Callback):  # type: ignore[misc]
    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch == 2:
            raise RuntimeError("another callback failed")


def test_an_interrupted_gan_fit_leaves_both_optimizers_as_the_user_had_them(shared_server: Any, api: Api) -> None:
    # The generator's optimizer under a loss scaler, as with mixed precision (keras-io's mixed precision guide).
    d_opt = keras.optimizers.Adam(1e-3, clipnorm=2.0)
    g_opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3, global_clipnorm=3.0))
    model = gan(d_opt, g_opt)
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="gan-interrupted")
    with pytest.raises(RuntimeError, match="another callback failed"):
        model.fit(digits(), batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon, FailAt()])
    run = api.wait_status("gan-interrupted", "interrupted")
    assert len(run["variables"]) == 8 and api.get(f"/api/runs/{run['id']}/metrics")["step"] == [0, 1, 2]
    for opt in (d_opt, g_opt, g_opt.inner_optimizer, model.optimizer):
        assert "apply" not in vars(opt) and "scale_loss" not in vars(opt)
    assert d_opt.clipnorm == 2.0 and g_opt.inner_optimizer.global_clipnorm == 3.0
    model.fit(digits(), batch_size=BATCH, epochs=1, verbose=0)  # the next fit, unmonitored, trains as usual
    assert int(d_opt.iterations.numpy()) == 3 + 8
    mon.close(5)
