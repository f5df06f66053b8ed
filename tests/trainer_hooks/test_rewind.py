"""Rewind (issue 19): snapshots restore bitwise, training on from one equals a restart from the same state,
and a run driven into NaN is rewound unattended and finishes healthy. Real Keras fits, a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.control import ControlState, RunControl
from gradwatch.trainer_hooks.rewind import Rewinder
from gradwatch.trainer_hooks.snapshots import Snapshots, SnapshotTooLarge, state_variables
from tensorflow.python.framework import config as tf_config
from waiting import wait_until

from gradwatch import GradientMonitor
from gradwatch.protocol import Ack, Command, CommandMessage, Status

BATCH, STEPS = 8, 24


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH * STEPS, 6)).astype("float32")
    return x, (x[:, :1] * 2 - x[:, 1:2]).astype("float32")


def mlp(optimizer: Any = None, **compile_args: Any) -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01), loss="mse", **compile_args)
    return model


def state(model: keras.Model) -> list[np.ndarray]:
    """An independent copy of everything a rewind should restore (not through the snapshot code)."""
    return [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]


def assert_bitwise(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def test_a_restore_is_bitwise_also_the_loss_scale_and_budget_is_enforced() -> None:
    x, y = data()
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = mlp(keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.01, momentum=0.9)))
        model.fit(x[:16], y[:16], batch_size=BATCH, verbose=0)
        variables = state_variables(model, [model.optimizer])
        # the scope is "loss_scale_optimizer_<n>" when other tests in the process made one before
        names = {v.path.split("/", 1)[-1] for v in variables if v.path.startswith("loss_scale_optimizer")}
        assert {"dynamic_scale", "step_counter"} <= names
        snaps = Snapshots(variables, every=1, keep=2, budget_bytes=2**20)
        before = state(model)
        assert snaps.take(1) and snaps.steps == [1]
        model.fit(x, y, batch_size=BATCH, verbose=0)
        assert before[0].tobytes() != state(model)[0].tobytes()
        snaps.restore(snaps.newest_at_or_before(5) or pytest.fail("no snapshot"))
        assert_bitwise(state(model), before)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    with pytest.raises(SnapshotTooLarge, match="raise snapshot_mb to at least"):
        Snapshots(variables, every=1, keep=2, budget_bytes=100)


def test_unattended_rewinds_stop_at_max_rewinds_and_pause() -> None:
    model = mlp()
    model.fit(*data(), batch_size=BATCH, verbose=0, epochs=1)
    lr = model.optimizer.learning_rate
    rewinder = Rewinder(
        Snapshots(state_variables(model, [model.optimizer]), 1, 2, 2**20),
        lambda: [lr],
        lambda *a: None,
        lr_factor=0.5,
        max_rewinds=1,
    )
    assert rewinder.after_step(10, lambda: True)
    sent: list[Any] = []
    control = RunControl(on_clip=lambda *a: None, send=sent.append, on_rewind=rewinder.apply)
    for i in (1, 2):
        control.submit(CommandMessage(id=i, command=Command(type="rewind", step=10, auto=True)))
    control.apply_pending(20)
    assert sent[0] == Ack(
        type="ack", id=1, state="applied", applied_step=20, detail="rewound to the snapshot of step 10, lr 0.005"
    )
    assert float(lr.numpy()) == np.float32(0.005)
    assert sent[1].state == "rejected" and "max_rewinds=1" in sent[1].detail
    assert sent[2] == Status(type="status", state="paused", step=20) and control.state is ControlState.PAUSED


class Recorder(keras.callbacks.Callback):
    """Keeps the state after every step; at step ``at`` posts ``rewind`` and waits until the trainer has it."""

    def __init__(self, monitor: GradientMonitor, post: Any, at: int) -> None:
        super().__init__()
        self.monitor, self.post, self.at = monitor, post, at
        self.states: dict[int, list[np.ndarray]] = {}

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.states[batch] = state(self.model)
        if batch == self.at:
            self.post()
            session = self.monitor.session
            assert session is not None
            wait_until(lambda: session.control.has_pending, interval=0.01, message="the command to reach the trainer")


def run_id_of(api: httpx.Client) -> int:
    runs = wait_until(lambda: api.get("/api/runs").json(), interval=0.02, message="a run")
    return int(runs[0]["id"])


def wait_command(api: httpx.Client, run_id: int, kind: str) -> dict[str, Any]:
    done = wait_until(
        lambda: [
            c for c in api.get(f"/api/runs/{run_id}/commands").json() if c["type"] == kind and c["state"] != "pending"
        ],
        message=f"a {kind} acknowledged",
    )
    return dict(done[0])


@pytest.fixture
def deterministic() -> Iterator[None]:
    was = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was:  # the rest of the process runs as it would have (op determinism turns XLA off in fit)
        tf_config.disable_op_determinism()


def test_rewind_from_the_api_equals_a_restart_from_the_same_state(gradwatch_server: Any, deterministic: None) -> None:
    server = gradwatch_server()
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    x, y = data()
    model = mlp()
    monitor = GradientMonitor(server=server.url, token=server.token, snapshot_every=4, snapshot_keep=3)

    def post() -> None:
        r = api.post(f"/api/runs/{run_id_of(api)}/commands", json={"type": "rewind", "step": 9})
        assert r.status_code == 202, r.text

    recorder = Recorder(monitor, post, at=12)
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[monitor, recorder])
    run_id = run_id_of(api)
    ack = wait_command(api, run_id, "rewind")
    assert ack["state"] == "applied", ack
    assert ack["detail"].startswith("rewound to the snapshot of step 8"), ack
    k = ack["applied_step"]
    assert k == 14  # monitored at the end of step 13, the batch after the one that posted it
    assert_bitwise(recorder.states[k - 1], recorder.states[8])  # restored bitwise at the end of step k - 1
    # The snapshot of step 12 belonged to the discarded stretch; 16 and 20 were taken after the rewind.
    wait_until(lambda: api.get(f"/api/runs/{run_id}").json()["snapshots"] == [8, 16, 20], message="the snapshot steps")
    # The reference: the same model restarted from the state after step 8, trained on the batches k.. that the
    # rewound run trained on after the rewind, with the same learning rate.
    ref = mlp()
    ref.optimizer.build(ref.trainable_variables)
    for variable, value in zip([*ref.variables, *ref.optimizer.variables], recorder.states[8], strict=True):
        variable.assign(value)
    ref.fit(x[k * BATCH :], y[k * BATCH :], batch_size=BATCH, shuffle=False, verbose=0)
    assert_bitwise(state(ref), state(model))
    # Step numbering goes on after a rewind: the monitor reported every step 0..STEPS-1 once.
    metrics = wait_until(
        lambda: (m := api.get(f"/api/runs/{run_id}/metrics").json())["step"][-1:] == [STEPS - 1] and m,
        message="every step",
    )
    assert metrics["step"] == list(range(STEPS))


@pytest.mark.parametrize(
    ("compile_args", "snapshot"),
    [({}, 8), ({"jit_compile": True, "steps_per_execution": 2}, 9)],  # snapshots after steps 1, 5, 9 there
    ids=["plain", "xla-steps_per_execution=2"],
)
def test_a_nan_blow_up_is_rewound_unattended_and_the_run_finishes_healthy(
    gradwatch_server: Any, compile_args: dict[str, Any], snapshot: int
) -> None:
    server = gradwatch_server()
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    x, y = data()
    x[10 * BATCH : 11 * BATCH] = np.nan  # batch 10 blows the weights up (no guard)
    model = mlp(keras.optimizers.SGD(0.02), **compile_args)
    monitor = GradientMonitor(
        server=server.url, token=server.token, snapshot_every=4, rewind_on=("nonfinite",), rewind_lr_factor=0.5
    )

    class Hold(keras.callbacks.Callback):
        """After the bad batch, let the alert and its rewind reach the trainer (the fit is faster than a link):
        from step 12 on, when the monitor has read step 10's row (the snapshot due then reads the ring)."""

        held = False

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            session = monitor.session
            if batch >= 12 and not self.held and session is not None:
                self.held = True
                wait_until(lambda: session.control.has_pending, interval=0.01, message="the rewind to arrive")

    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[monitor, Hold()])
    assert model.jit_compile is compile_args.get("jit_compile", False)  # XLA did compile the step there
    assert all(np.isfinite(w).all() for w in model.get_weights())
    run_id = run_id_of(api)
    ack = wait_command(api, run_id, "rewind")
    assert ack["state"] == "applied" and ack["origin"].startswith("auto: nonfinite alert"), ack
    assert ack["detail"] == f"rewound to the snapshot of step {snapshot}, lr 0.01", ack
    assert float(model.optimizer.learning_rate.numpy()) == np.float32(0.01)
    info = api.get(f"/api/runs/{run_id}").json()["meta"]["rewind"]
    assert "neither replayed nor skipped" in info


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_watch_loops_rewind_between_steps_and_refuse_inside_a_compiled_step(
    gradwatch_server: Any, compiled: bool
) -> None:
    server = gradwatch_server()
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    x, y = data()
    model = mlp()
    optimizer = model.optimizer
    monitor = GradientMonitor(server=server.url, token=server.token, snapshot_every=4)
    states: dict[int, list[np.ndarray]] = {}

    def train(watch: Any, xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = keras.losses.mean_squared_error(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        watch.apply_gradients(grads, model.trainable_variables, loss=tf.reduce_mean(loss))

    step_fn = tf.function(train) if compiled else train
    with monitor.watch(model, optimizer) as watch:
        for i in range(STEPS):
            step_fn(watch, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
            states[i] = state(model)
            if i == 12:
                r = api.post(f"/api/runs/{run_id_of(api)}/commands", json={"type": "rewind", "step": 9})
                assert r.status_code == 202, r.text
                session = monitor.session
                assert session is not None
                wait_until(lambda s=session: s.control.has_pending, message="the rewind to reach the trainer")
    ack = wait_command(api, run_id_of(api), "rewind")
    if compiled:
        assert ack["state"] == "rejected" and "inside its compiled step" in ack["detail"], ack
        return
    assert ack["state"] == "applied" and ack["applied_step"] == 14, ack
    assert_bitwise(states[13], states[8])


def test_a_gan_rewinds_both_optimizers_bitwise(gradwatch_server: Any) -> None:
    from .test_multi_optimizer import digits, gan

    server = gradwatch_server()
    api = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)
    model = gan(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(2e-3))
    monitor = GradientMonitor(server=server.url, token=server.token, snapshot_every=2)

    def gan_state(m: Any) -> list[np.ndarray]:
        variables = [*m.variables, *m.d_optimizer.variables, *m.g_optimizer.variables]
        return [np.array(v.numpy()) for v in variables]

    def post() -> None:
        r = api.post(f"/api/runs/{run_id_of(api)}/commands", json={"type": "rewind", "step": 3})
        assert r.status_code == 202, r.text

    class GanRecorder(Recorder):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            super().on_train_batch_end(batch, logs)
            self.states[batch] = gan_state(self.model)

    recorder = GanRecorder(monitor, post, at=4)
    model.fit(digits(), batch_size=64, shuffle=False, verbose=0, callbacks=[monitor, recorder])
    ack = wait_command(api, run_id_of(api), "rewind")
    assert ack["state"] == "applied" and ack["applied_step"] == 6, ack
    assert ack["detail"].startswith("rewound to the snapshot of step 2"), ack  # held 0, 2, 4: newest <= 3
    assert_bitwise(recorder.states[5], recorder.states[2])
