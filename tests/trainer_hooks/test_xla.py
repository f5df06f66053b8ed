"""XLA (``jit_compile=True``, what Keras' default ``"auto"`` picks on a GPU): the monitor trains and reports.

On this CPU machine ``jit_compile=True`` is how the GPU default is tested. Each test
compares against the same run without XLA (same seed) or checks a control's step.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

from .test_monitor_integration import BATCH, Api, data, functional, sequential

EPOCHS = 2


def fit_run(
    server: Any,
    build: Callable[[], keras.Model],
    jit: bool,
    x: Any = None,
    y: Any = None,
    batch_size: int = BATCH,
    steps_per_execution: int = 1,
    **monitor_kwargs: Any,
) -> tuple[keras.Model, list[warnings.WarningMessage]]:
    if x is None:
        x, y = data()
    keras.utils.set_random_seed(1)
    model = build()
    model.compile(
        keras.optimizers.SGD(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
        steps_per_execution=steps_per_execution,
    )
    mon = GradientMonitor(
        server=server.url, token=server.token, run_name=f"{build.__name__}-jit{jit}", **monitor_kwargs
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=batch_size, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[mon])
    assert mon.close()  # the run ends finished once every step went out (fit itself never waits)
    assert model.jit_compile is jit
    return model, [w for w in caught if "gradwatch" in str(w.message)]


def run_named(api: Api, name: str) -> dict[str, Any]:
    return next(r for r in api.get("/api/runs") if r["name"] == name)


def values(series: list[Any]) -> list[float]:
    return [decode_float(v) for v in series]


@pytest.mark.parametrize("build", [sequential, functional], ids=["sequential-mlp", "functional-bn"])
def test_fit_under_xla_reports_what_plain_fit_reports(gradwatch_server: Any, build: Any) -> None:
    server = gradwatch_server()
    api = Api(server)
    _, plain_warnings = fit_run(server, build, jit=False)
    _, xla_warnings = fit_run(server, build, jit=True)
    assert plain_warnings == [] and xla_warnings == []  # the monitor kept running under XLA
    steps = EPOCHS * len(data()[0]) // BATCH
    runs = {jit: run_named(api, f"{build.__name__}-jit{jit}") for jit in (False, True)}
    metrics = {jit: api.get(f"/api/runs/{r['id']}/metrics") for jit, r in runs.items()}
    for jit, run in runs.items():
        assert run["status"] == "finished" and run["step"] == steps - 1
        assert metrics[jit]["step"] == list(range(steps))
        info = api.get(f"/api/runs/{run['id']}")["meta"]
        assert "probe" not in info  # the probe replays the kept training batch under XLA too
        assert "origin" not in info  # under XLA too, fit keeps a non-finite step's whole batch
    plain, xla = metrics[False], metrics[True]
    np.testing.assert_allclose(values(xla["loss"]), values(plain["loss"]), rtol=1e-4)
    np.testing.assert_allclose(values(xla["global_norm"]), values(plain["global_norm"]), rtol=1e-4)
    # Keras numbers layers per process: compare the variables in model order.
    assert len(xla["grad_norm"]) == len(plain["grad_norm"]) > 0
    for got, want in zip(xla["grad_norm"].values(), plain["grad_norm"].values()):
        np.testing.assert_allclose(values(got), values(want), rtol=1e-4, atol=1e-7)
    (bn_xla,), (bn_plain,) = xla["bn"].values(), plain["bn"].values()
    assert bn_xla["moving_variance"][-1] == pytest.approx(bn_plain["moving_variance"][-1], rel=1e-4)


def overflowing() -> keras.Model:
    """Finite inputs, finite weights, and a layer whose output overflows for a large input."""
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16),
            keras.layers.Activation("exponential", name="exp_overflow"),
            keras.layers.Dense(2),
        ]
    )


def origin_evidence(api: Api, run_name: str) -> dict[str, Any]:
    """The evidence of the run's nonfinite alert, once the origin of the first bad step is in it."""
    run = run_named(api, run_name)
    alerts = api.wait(
        lambda: [
            a
            for a in api.get(f"/api/runs/{run['id']}/alerts")
            if a["kind"] == "nonfinite" and a["evidence"].get("origin_source")
        ],
        desc="the nonfinite alert's origin",
    )
    return dict(alerts[0]["evidence"])


@pytest.mark.parametrize(
    ("poison", "source", "layer"),
    [("nan", "features", None), ("huge", "layer", "exp_overflow")],
    ids=["nan-features", "layer-overflow"],
)
def test_the_origin_of_a_nonfinite_step_is_found_under_xla(
    shared_server: Any, poison: str, source: str, layer: str | None
) -> None:
    x, y = data()
    x[3 * BATCH + 2, 1] = np.nan if poison == "nan" else 1e4  # the fourth batch (step 3)
    name = f"origin-{poison}"

    def build() -> keras.Model:
        return overflowing() if poison == "huge" else sequential()

    build.__name__ = name
    _, caught = fit_run(shared_server, build, jit=True, x=x, y=y, guard_nonfinite=True)
    assert caught == []
    evidence = origin_evidence(Api(shared_server), f"{name}-jitTrue")
    assert evidence["origin_step"] == 3
    assert evidence["origin_source"] == source
    assert evidence["origin_layer"] == layer


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_the_origin_past_the_256th_example_of_a_batch_is_found_under_xla(
    shared_server: Any, steps_per_execution: int
) -> None:
    """fit keeps the batch outside the compiled step, whole: an overflow in its 281st example is found."""
    x, y = data(n=600)
    x[300 + 280, :] = 1e4  # the second batch of 300 (step 1), past the 256 examples kept inside XLA
    name = f"origin-row-280-spe{steps_per_execution}"

    def build() -> keras.Model:
        return overflowing()

    build.__name__ = name
    _, caught = fit_run(
        shared_server,
        build,
        jit=True,
        x=x,
        y=y,
        batch_size=300,
        steps_per_execution=steps_per_execution,
        guard_nonfinite=True,
    )
    assert caught == []
    evidence = origin_evidence(Api(shared_server), f"{name}-jitTrue")
    assert (evidence["origin_step"], evidence["origin_source"], evidence["origin_layer"]) == (
        1,
        "layer",
        "exp_overflow",
    )


def test_set_clip_and_stop_apply_at_the_acknowledged_step_under_xla(shared_server: Any) -> None:
    x, y = data(n=256)
    keras.utils.set_random_seed(1)
    model = sequential()
    model.compile(
        keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    mon = GradientMonitor(
        server=shared_server.url, token=shared_server.token, run_name="xla-controls", clip_threshold=100.0
    )
    errors: list[BaseException] = []

    def train() -> None:
        try:
            model.fit(x, y, batch_size=BATCH, epochs=1000, verbose=0, callbacks=[mon])
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    api = Api(shared_server)
    try:
        run = api.wait(
            lambda: (
                (r := [r for r in api.get("/api/runs") if r["name"] == "xla-controls"])
                and r[0]["step"] is not None
                and r[0]
            ),
            desc="run",
        )
        clip = api.wait_applied(
            run["id"], api.post_command(run["id"], type="set_clip", mode="global_norm", threshold=0.05)
        )
        assert clip["state"] == "applied"
        api.wait(lambda: api.get(f"/api/runs/{run['id']}")["step"] > clip["applied_step"] + 10, desc="steps")
        stop = api.wait_applied(run["id"], api.post_command(run["id"], type="stop"))
        assert stop["state"] == "applied"
        thread.join(60)
        assert not thread.is_alive() and not errors
    finally:
        if thread.is_alive():
            model.stop_training = True
            thread.join(30)
    final = api.get(f"/api/runs/{run['id']}")
    assert final["status"] == "finished" and final["step"] == stop["applied_step"] - 1
    m = api.get(f"/api/runs/{run['id']}/metrics")
    assert m["step"] == list(range(stop["applied_step"]))
    by_step = dict(zip(m["step"], m["clip_threshold"]))
    assert all(t == 100.0 for s, t in by_step.items() if s < clip["applied_step"])
    assert all(t == pytest.approx(0.05) for s, t in by_step.items() if s >= clip["applied_step"])
    scales = [decode_float(v) for s, v in zip(m["step"], m["clip_scale"]) if s >= clip["applied_step"]]
    assert all(s < 1.0 for s in scales)  # 0.05 bites on this model: the clip really ran in the XLA step


# --------------------------------------------------------------------------- watch() in an XLA step

STEPS = 12


def loop(
    server: Any, jit: bool, on_step: Callable[[int, Any], None] | None = None, steps: int = STEPS
) -> tuple[int, list[warnings.WarningMessage]]:
    """A GradientTape loop whose step is ``tf.function(jit_compile=jit)``; returns the steps it ran."""
    x, y = data(n=8 * BATCH)
    keras.utils.set_random_seed(3)
    model = sequential()
    optimizer = keras.optimizers.SGD(0.05)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mon = GradientMonitor(server=server.url, token=server.token, run_name=f"loop-jit{jit}", clip_threshold=0.5)
    done = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mon.watch(model, optimizer) as watch:

            @tf.function(jit_compile=jit)
            def step(xb: Any, yb: Any) -> None:
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb, model(xb, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                watch.apply_gradients(grads, model.trainable_variables, loss=loss, inputs=(xb, yb))

            for i in range(steps):
                j = i % 8
                step(x[j * BATCH : (j + 1) * BATCH], y[j * BATCH : (j + 1) * BATCH])
                done += 1
                if on_step is not None:
                    on_step(i, watch)
                if watch.stop_requested:
                    break
    assert mon.close()
    return done, [w for w in caught if "gradwatch" in str(w.message)]


def test_watch_inside_an_xla_function_reports_what_tf_function_reports(gradwatch_server: Any) -> None:
    server = gradwatch_server()
    api = Api(server)
    assert loop(server, jit=False)[1] == []
    assert loop(server, jit=True)[1] == []
    plain, xla = (api.get(f"/api/runs/{run_named(api, f'loop-jit{jit}')['id']}/metrics") for jit in (False, True))
    assert xla["step"] == plain["step"] == list(range(STEPS))
    for key in ("loss", "global_norm", "clip_scale"):
        np.testing.assert_allclose(values(xla[key]), values(plain[key]), rtol=1e-4, err_msg=key)
    assert any(decode_float(s) < 1.0 for s in xla["clip_scale"])  # the live clip ran inside the XLA step
    for got, want in zip(xla["grad_norm"].values(), plain["grad_norm"].values()):
        np.testing.assert_allclose(values(got), values(want), rtol=1e-4, atol=1e-7)
    assert api.get(f"/api/runs/{run_named(api, 'loop-jitTrue')['id']}")["status"] == "finished"


def test_watch_under_xla_pauses_clips_and_stops_at_the_acknowledged_step(shared_server: Any) -> None:
    api = Api(shared_server)
    seen: dict[str, Any] = {}

    def on_step(i: int, watch: Any) -> None:
        if i != 4:
            return
        run = api.wait(lambda: [r for r in api.get("/api/runs") if r["name"] == "loop-jitTrue"], desc="run")[0]
        seen["run"] = run["id"]
        seen["pause"] = api.post_command(run["id"], type="pause")
        seen["clip"] = api.post_command(run["id"], type="set_clip", mode="global_norm", threshold=0.01)

        def resume_then_stop() -> None:
            api.wait(lambda: api.get(f"/api/runs/{run['id']}")["status"] == "paused", desc="paused")
            seen["paused_step"] = api.get(f"/api/runs/{run['id']}")["step"]
            threading.Event().wait(0.5)
            seen["still"] = api.get(f"/api/runs/{run['id']}")["step"]
            api.post_command(run["id"], type="resume")
            api.wait(lambda: api.get(f"/api/runs/{run['id']}")["step"] >= seen["paused_step"] + 5, desc="resumed")
            seen["stop"] = api.post_command(run["id"], type="stop")

        threading.Thread(target=resume_then_stop, daemon=True).start()

    done, caught = loop(shared_server, jit=True, on_step=on_step, steps=10_000)
    assert caught == [] and done < 10_000
    run_id = seen["run"]
    pause, clip, stop = (api.command(run_id, seen[k]) for k in ("pause", "clip", "stop"))
    assert pause["state"] == clip["state"] == stop["state"] == "applied"
    assert seen["still"] == seen["paused_step"] == pause["applied_step"] - 1  # blocked in stop_requested
    assert done == stop["applied_step"]  # the loop ended right after the step the stop was acknowledged at
    m = api.get(f"/api/runs/{run_id}/metrics")
    assert m["step"] == list(range(done))
    thresholds = dict(zip(m["step"], m["clip_threshold"]))
    assert all(t == 0.5 for s, t in thresholds.items() if s < clip["applied_step"])
    assert all(t == pytest.approx(0.01) for s, t in thresholds.items() if s >= clip["applied_step"])
    assert all(math.isfinite(v) for v in values(m["global_norm"]))


def test_fit_under_xla_trains_bitwise_alike_with_the_monitor(shared_server: Any) -> None:
    """The same weights, bit for bit, with and without the monitor, under XLA (a CPU XLA step repeats
    exactly; op determinism would switch XLA off): the update ratio's ordering trick changes no value."""
    x, y = data()

    def train(callbacks: list[Any]) -> list[np.ndarray]:
        keras.utils.set_random_seed(1)
        model = sequential()
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
        assert model.jit_compile is True
        return [np.asarray(w) for w in model.get_weights()]

    plain = train([])
    mon = GradientMonitor(server=shared_server.url, token=shared_server.token, run_name="xla-bitwise")
    watched = train([mon])
    assert mon.close()
    assert len(plain) == len(watched) > 0
    for a, b in zip(plain, watched):
        assert a.tobytes() == b.tobytes()
