"""Real Keras ``model.fit`` with ``GradientMonitor`` streaming to a real ``gradwatch serve``."""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import keras
import numpy as np
import pytest
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.protocol import decode_float

BATCH = 16


def data(n: int = 128, features: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return x, y


def sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )


def functional() -> keras.Model:
    inp = keras.Input((8,))
    a = keras.layers.Dense(16, activation="relu")(inp)
    b = keras.layers.Dense(16, activation="tanh")(inp)
    h = keras.layers.BatchNormalization()(keras.layers.Concatenate()([a, b]))
    return keras.Model(inp, keras.layers.Dense(2)(h))


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.block = keras.Sequential([keras.layers.Dense(16, activation="relu"), keras.layers.BatchNormalization()])
        self.out = keras.layers.Dense(2)

    def call(self, x: Any, training: bool = False) -> Any:
        return self.out(self.block(x, training=training))


def compiled(build: Callable[[], keras.Model], optimizer: Any = None) -> keras.Model:
    keras.utils.set_random_seed(1)
    model = build()
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class Api:
    """Small REST helper bound to one running server."""

    def __init__(self, server: Any) -> None:
        self.client = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post_command(self, run_id: int, **body: Any) -> int:
        r = self.client.post(f"/api/runs/{run_id}/commands", json=body)
        assert r.status_code == 202, r.text
        return int(r.json()["id"])

    def only_run(self) -> dict[str, Any]:
        runs = self.get("/api/runs")
        assert len(runs) == 1, runs
        return runs[0]

    def wait(self, what: Callable[[], Any], timeout: float = 30.0, desc: str = "") -> Any:
        return wait_until(what, timeout, message=desc or repr(what))

    def command(self, run_id: int, command_id: int) -> dict[str, Any]:
        return next(c for c in self.get(f"/api/runs/{run_id}/commands") if c["id"] == command_id)

    def wait_applied(self, run_id: int, command_id: int) -> dict[str, Any]:
        return self.wait(
            lambda: (c := self.command(run_id, command_id))["state"] != "pending" and c,
            desc=f"command {command_id} to be acknowledged",
        )


@pytest.fixture
def server(gradwatch_server: Any) -> Any:
    return gradwatch_server()


def monitor_for(server: Any, **kwargs: Any) -> GradientMonitor:
    return GradientMonitor(server=server.url, token=server.token, flush_timeout=10, **kwargs)


class TraceSpy(keras.callbacks.Callback):
    """Records how often the monitored step was traced by the end of the first step.

    TensorFlow may trace a function twice during its very first call (when the
    first trace creates variables, e.g. SGD momentum slots); what matters is
    that nothing traces it again afterwards, whatever is changed mid-run.
    """

    def __init__(self, monitor: GradientMonitor) -> None:
        super().__init__()
        self.monitor = monitor
        self.after_first_step: int | None = None

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.after_first_step is None and self.monitor.stats is not None:
            self.after_first_step = self.monitor.stats.traces

    def assert_no_retrace(self, exactly_once: bool = True) -> None:
        assert self.monitor.stats is not None and self.after_first_step is not None
        if exactly_once:
            assert self.after_first_step == 1
        else:  # a model first built inside the trace makes TensorFlow trace that first call twice
            assert 1 <= self.after_first_step <= 2
        assert self.monitor.stats.traces == self.after_first_step


@pytest.mark.parametrize("build", [sequential, functional, Subclassed], ids=["sequential", "functional", "subclassed"])
@pytest.mark.parametrize(
    "make_optimizer",
    [lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: keras.optimizers.Adam(1e-3), keras.optimizers.RMSprop],
    ids=["sgd", "adam", "rmsprop"],
)
def test_fit_streams_every_variable_and_batchnorm(server: Any, build: Any, make_optimizer: Any) -> None:
    x, y = data()
    model = compiled(build, make_optimizer())
    mon = monitor_for(server, run_name="integration")
    spy = TraceSpy(mon)
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[mon, spy])
    steps = 2 * len(x) // BATCH
    api = Api(server)
    run = api.only_run()
    assert run["status"] == "idle" and run["step"] == steps - 1  # fit returned; the monitor may train on
    detail = api.get(f"/api/runs/{run['id']}")
    assert detail["variables"] == [v.path for v in model.trainable_variables]
    assert len(detail["bn_layers"]) == 1
    m = api.get(f"/api/runs/{run['id']}/metrics")
    assert m["step"] == list(range(steps))
    assert set(m["grad_norm"]) == set(detail["variables"])
    for name, series in m["grad_norm"].items():
        values = [decode_float(v) for v in series]
        assert len(values) == steps and all(math.isfinite(v) and v >= 0 for v in values), name
        assert any(v > 0 for v in values), name
    assert all(math.isfinite(decode_float(v)) for v in m["loss"])
    bn = next(iter(m["bn"].values()))
    assert len(bn["moving_mean"]) == steps
    sampled = [decode_float(v) for v in bn["moving_variance"] if v is not None]  # sampled between steps
    assert sampled and bn["moving_variance"][-1] is not None  # ... and always after the last one
    # BatchNorm trained in fit: its moving statistics leave their initial values.
    assert sampled[-1] != pytest.approx(1.0, abs=1e-3)
    spy.assert_no_retrace(exactly_once=build is not Subclassed)


def test_reported_norms_match_an_independent_computation(server: Any) -> None:
    """First step's norms equal the norms of the gradient computed by hand on the same batch and weights."""
    import tensorflow as tf

    x, y = data()
    model = compiled(sequential, keras.optimizers.SGD(0.0))  # lr 0: weights stay put
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y[:BATCH], model(x[:BATCH], training=True))
    expected = [float(tf.norm(g)) for g in tape.gradient(loss, model.trainable_variables)]
    cb = [monitor_for(server)]
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=cb)
    api = Api(server)
    run = api.only_run()
    m = api.get(f"/api/runs/{run['id']}/metrics")
    got = [decode_float(m["grad_norm"][v.path][0]) for v in model.trainable_variables]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert decode_float(m["loss"][0]) == pytest.approx(float(loss), rel=1e-5)


def test_every_n_reports_multiples_of_n_and_every_nonfinite_step(server: Any) -> None:
    x, y = data()
    x[3 * BATCH + 2, 1] = np.nan  # the fourth batch (step 3) is the only non-finite step ...
    model = compiled(sequential)
    mon = monitor_for(server, every=5, guard_nonfinite=True)  # ... because the guard skips its update
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False, callbacks=[mon])
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    steps = len(x) // BATCH * 2
    bad = {3, 3 + len(x) // BATCH}  # the same batch in both epochs
    assert m["step"] == sorted(set(range(0, steps, 5)) | bad)
    assert [m["skipped"][m["step"].index(b)] for b in sorted(bad)] == [True, True]
    assert not any(m["skipped"][i] for i, s in enumerate(m["step"]) if s not in bad)


def test_nan_inputs_are_counted(server: Any) -> None:
    x, y = data()
    x[3 * BATCH + 2, 1] = np.nan  # poison one example of the fourth batch
    model = compiled(sequential)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[monitor_for(server)])
    api = Api(server)
    run = api.only_run()
    m = api.get(f"/api/runs/{run['id']}/metrics")
    first_bad = 3
    totals = [sum(series[i] for series in m["nonfinite"].values()) for i in range(len(m["step"]))]
    assert all(t == 0 for t in totals[:first_bad])
    assert totals[first_bad] > 0
    assert not math.isfinite(decode_float(m["global_norm"][first_bad]))
    # ReLU turns the NaN activations into zeros, so the loss stays finite, but the
    # kernel's gradient is NaN and the update poisons the weights (as in the seed case):
    # the host's scan right after that step finds them, and keeps finding them.
    assert m["weight_nonfinite"][first_bad] > 0
    assert m["weight_nonfinite"][first_bad + 1] == m["weight_nonfinite"][first_bad]


def test_optimizer_clipping_is_adopted_and_restored(server: Any) -> None:
    x, y = data()
    optimizer = keras.optimizers.SGD(0.05, global_clipnorm=0.25)
    model = compiled(sequential, optimizer)
    seen: list[Any] = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            seen.append(optimizer.global_clipnorm)

    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor_for(server), Spy()])
    assert set(seen) == {0.25}  # the optimizer is the user's between steps: switched off only in the trace
    assert optimizer.global_clipnorm == 0.25  # restored for later use
    api = Api(server)
    run = api.only_run()
    assert api.get(f"/api/runs/{run['id']}")["clip"] == {"mode": "global_norm", "threshold": 0.25}
    m = api.get(f"/api/runs/{run['id']}/metrics")
    assert set(m["clip_threshold"]) == {0.25}
    for g, s in zip(m["global_norm"], m["clip_scale"]):
        assert decode_float(s) == pytest.approx(min(1.0, 0.25 / decode_float(g)), rel=1e-4)


def test_the_optimizer_never_clips_a_second_time(server: Any) -> None:
    # The monitor's threshold (1.0) above the optimizer's own (0.01): clipping twice would bite at 0.01.
    x, y = data()
    reference = compiled(sequential, keras.optimizers.SGD(0.05, global_clipnorm=1.0))
    reference.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    model = compiled(sequential, keras.optimizers.SGD(0.05, global_clipnorm=0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "using clip_threshold=1.0 instead"
        mon = monitor_for(server, clip_threshold=1.0)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[mon])
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert model.optimizer.global_clipnorm == 0.01


def test_pause_resume_and_live_clip_change(server: Any) -> None:
    x, y = data(n=256)
    model = compiled(sequential)
    mon = monitor_for(server, clip_threshold=100.0)
    spy = TraceSpy(mon)
    errors: list[BaseException] = []

    def train() -> None:
        try:
            model.fit(x, y, batch_size=BATCH, epochs=1000, verbose=0, callbacks=[mon, spy])
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    api = Api(server)
    try:
        run = api.wait(lambda: (runs := api.get("/api/runs")) and runs[0]["step"] is not None and runs[0], desc="run")
        run_id = run["id"]
        pause_id = api.post_command(run_id, type="pause")
        paused = api.wait_applied(run_id, pause_id)
        assert paused["state"] == "applied"
        api.wait(lambda: api.get(f"/api/runs/{run_id}")["status"] == "paused", desc="paused status")
        step_at_pause = api.get(f"/api/runs/{run_id}")["step"]
        time.sleep(1.0)  # stays: an absence (no step) needs time to pass in which a step could have come
        assert api.get(f"/api/runs/{run_id}")["step"] == step_at_pause  # no step while paused
        assert step_at_pause == paused["applied_step"] - 1

        clip_id = api.post_command(run_id, type="set_clip", mode="global_norm", threshold=0.05)
        clip = api.wait_applied(run_id, clip_id)
        assert clip["state"] == "applied" and clip["applied_step"] == paused["applied_step"]
        resume_id = api.post_command(run_id, type="resume")
        assert api.wait_applied(run_id, resume_id)["state"] == "applied"
        api.wait(lambda: api.get(f"/api/runs/{run_id}")["step"] > step_at_pause + 20, desc="training to resume")

        stop_id = api.post_command(run_id, type="stop")
        assert api.wait_applied(run_id, stop_id)["state"] == "applied"
        thread.join(30)
        assert not thread.is_alive() and not errors
    finally:
        if thread.is_alive():  # never leave a training thread behind
            mon.session and mon.session.control.finish()
            model.stop_training = True
            thread.join(30)

    m = api.get(f"/api/runs/{run_id}/metrics")
    applied = clip["applied_step"]
    by_step = dict(zip(m["step"], m["clip_threshold"]))
    assert all(t == 100.0 for s, t in by_step.items() if s < applied)
    assert all(t == pytest.approx(0.05) for s, t in by_step.items() if s >= applied)  # float32 in-graph
    spy.assert_no_retrace()  # the threshold change did not retrace the step
    assert api.get(f"/api/runs/{run_id}")["status"] == "finished"


def test_unreachable_server_never_hurts_training() -> None:
    x, y = data()
    model = compiled(sequential)
    mon = GradientMonitor(server="http://127.0.0.1:9", token="t", flush_timeout=0.5)
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[mon])
    assert len(history.history["loss"]) == 2
    assert time.monotonic() - started < 30
    ours = [w for w in caught if "gradwatch" in str(w.message)]
    assert ours and "cannot reach the server" in str(ours[0].message)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every=0"),
        ({"clip_threshold": -1.0}, "clip_threshold=-1.0"),
        ({"clip_threshold": float("nan")}, "clip_threshold=nan"),
        ({"clip_mode": "l1"}, "clip_mode='l1'"),
        ({"server": "localhost:8765"}, "server='localhost:8765'"),
        ({"run_name": ""}, "run_name=''"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        GradientMonitor(**kwargs)


def test_update_to_weight_ratio_matches_sgd(server: Any) -> None:
    """With plain SGD, ‖Δw‖/‖w‖ of the first step is lr·‖g‖/‖w₀‖ (NaN for the zero-initialised biases)."""
    x, y = data()
    model = compiled(sequential, keras.optimizers.SGD(0.05))
    initial = {v.path: float(np.linalg.norm(v.numpy())) for v in model.trainable_variables}
    mon = monitor_for(server, update_ratio_every=5)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[mon])
    api = Api(server)
    m = api.get(f"/api/runs/{api.only_run()['id']}/metrics")
    for name, series in m["update_ratio"].items():
        first = decode_float(series[0]) if series[0] is not None else math.nan
        if initial[name] == 0:
            assert math.isnan(first), name
        else:
            expected = 0.05 * decode_float(m["grad_norm"][name][0]) / initial[name]
            assert first == pytest.approx(expected, rel=1e-4), name
        measured = [i for i, v in enumerate(series) if v is not None and not math.isnan(decode_float(v))]
        assert all(i % 5 == 0 for i in measured), name
