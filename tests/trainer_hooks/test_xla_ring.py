"""A jit-compiled loop that looks at the monitor only every N steps loses no step, or says which it lost.

keras-io's hand-written loops log every N steps; inside ``tf.function(jit_compile=True)`` that is also
when the host can read the statistics ring (XLA compiles no host call).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks import core as core_module

from gradwatch import GradientMonitor

from .test_monitor_integration import BATCH, Api, data, sequential
from .test_xla import run_named

STEPS, LOOK_EVERY = 80, 25


def sparse_loop(server: Any, name: str) -> list[str]:
    """80 XLA steps reading ``stop_requested`` every 25; the gradwatch warnings raised."""
    x, y = data(n=4 * BATCH)
    keras.utils.set_random_seed(3)
    model = sequential()
    optimizer = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=server.url, token=server.token, run_name=name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mon.watch(model, optimizer) as watch:

            @tf.function(jit_compile=True)
            def step(xb: Any, yb: Any) -> None:
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb, model(xb, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                watch.apply_gradients(grads, model.trainable_variables, loss=loss, inputs=(xb, yb))

            for i in range(STEPS):
                j = i % 4
                step(x[j * BATCH : (j + 1) * BATCH], y[j * BATCH : (j + 1) * BATCH])
                if i % LOOK_EVERY == 0 and watch.stop_requested:
                    break
    assert mon.close()
    return [str(w.message) for w in caught if "gradwatch" in str(w.message)]


def test_a_loop_reading_every_25_steps_stores_every_step(shared_server: Any) -> None:
    assert sparse_loop(shared_server, "look-every-25") == []
    api = Api(shared_server)
    run = run_named(api, "look-every-25")
    assert api.get(f"/api/runs/{run['id']}/metrics")["step"] == list(range(STEPS))
    assert api.get(f"/api/runs/{run['id']}")["gaps"] == []


def test_steps_the_ring_could_not_hold_are_a_gap_and_one_warning(
    shared_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_module, "XLA_RING_ROWS", 16)  # fewer rows than the loop's 25 steps between looks
    said = sparse_loop(shared_server, "ring-too-small")
    assert len(said) == 1, said
    assert "watch.stop_requested" in said[0] and "at least every 16 steps" in said[0]
    api = Api(shared_server)
    run = run_named(api, "ring-too-small")
    stored = api.get(f"/api/runs/{run['id']}/metrics")["step"]
    gaps = api.get(f"/api/runs/{run['id']}")["gaps"]
    lost = {s for g in gaps for s in range(g["from_step"], g["to_step"] + 1)}
    assert lost and not lost & set(stored)
    assert sorted(lost | set(stored)) == list(range(STEPS))  # every step is stored or inside a gap
    assert sum(g["dropped"] for g in gaps) == len(lost)
