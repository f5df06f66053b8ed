"""One run per monitor across fits, interruptions that leave nothing behind, loops re-entering ``watch()``.

Every test trains a real Keras model against a real ``gradwatch serve``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradwatch.trainer_hooks.fit_swap import FitSwap
from gradwatch.trainer_hooks.lifecycle import InvalidMove, Phase, RunLifecycle

from gradwatch import GradientMonitor

from .test_monitor_integration import Api as BaseApi

BATCH = 32
N = 128
STEPS = N // BATCH


def data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def model_with(optimizer: Any) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Api(BaseApi):
    def runs(self) -> list[dict[str, Any]]:
        return list(self.get("/api/runs"))

    def status(self, run_id: int, expected: str) -> dict[str, Any]:
        return self.wait(
            lambda: (d := self.get(f"/api/runs/{run_id}"))["status"] == expected and d, desc=f"status {expected}"
        )

    def steps(self, run_id: int) -> list[int]:
        return list(self.get(f"/api/runs/{run_id}/metrics")["step"])


@pytest.fixture(scope="module")
def api(shared_server: Any) -> Api:
    return Api(shared_server)


def monitor(server: Any, name: str, **kwargs: Any) -> GradientMonitor:
    return GradientMonitor(server=server.url, token=server.token, run_name=name, **kwargs)


def run_named(api: Api, name: str) -> dict[str, Any]:
    (run,) = [r for r in api.runs() if r["name"] == name]
    return run


class FirstBatchTime(keras.callbacks.Callback):
    def on_train_begin(self, logs: Any = None) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.start


# ---------------------------------------------------------------------- one run per monitor


def test_fit_in_a_loop_is_one_run_with_continuous_steps_idle_between_fits(shared_server: Any, api: Api) -> None:
    model = model_with(keras.optimizers.SGD(0.05))
    x, y = data()
    mon = monitor(shared_server, "loop")
    for epoch in range(10):  # the notebook pattern: fit(epochs=1) again and again, something in between
        model.fit(x, y, batch_size=BATCH, epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[mon])
        run = run_named(api, "loop")
        assert api.status(run["id"], "idle")["step"] == (epoch + 1) * STEPS - 1
        model.evaluate(x, y, verbose=0)
    assert api.steps(run["id"]) == list(range(10 * STEPS))
    epochs = api.get(f"/api/runs/{run['id']}/metrics")["epoch"]
    assert epochs == [s // STEPS for s in range(10 * STEPS)]  # initial_epoch labels the steps
    assert mon.stats is not None and mon.stats.traces == 1  # traced by the first fit only


def test_a_later_fit_does_not_retrace_and_one_without_the_monitor_runs_the_users_step(
    shared_server: Any, api: Api
) -> None:
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1.0)
    model = model_with(optimizer)
    x, y = data()
    mon = monitor(shared_server, "swap")
    timer = FirstBatchTime()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon, timer])
    first_trace = timer.first
    users = model.train_function  # the user's own, put back by the monitor
    assert users is not None and not isinstance(getattr(users, "__self__", None), FitSwap)

    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon, timer])
    assert mon.stats is not None and mon.stats.traces == 1
    assert timer.first is not None and first_trace is not None and timer.first < first_trace / 3
    assert model.train_function is users

    run = run_named(api, "swap")
    api.status(run["id"], "idle")
    monitored_steps = int(mon.stats.step.numpy())
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # without the monitor
    assert model.train_function is users and optimizer.clipnorm == 1.0
    assert int(mon.stats.step.numpy()) == monitored_steps  # the monitored step did not run
    assert int(optimizer.iterations.numpy()) == 3 * STEPS
    time.sleep(0.3)  # stays: an absence (no report) needs time in which one could have come
    assert api.get(f"/api/runs/{run['id']}")["step"] == 2 * STEPS - 1  # nothing reported for it

    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])  # the run goes on after the gap
    api.wait(lambda: api.get(f"/api/runs/{run['id']}")["step"] == 4 * STEPS - 1, desc="the fourth fit's steps")
    assert api.steps(run["id"]) == [*range(2 * STEPS), *range(3 * STEPS, 4 * STEPS)]


# ---------------------------------------------------------------------- interruptions


class Boom(keras.callbacks.Callback):
    """Raises ``error`` from on_train_batch_end at batch ``at`` (the notebook's "interrupt kernel", or a bug)."""

    def __init__(self, error: BaseException, at: int = 2) -> None:
        super().__init__()
        self.error, self.at = error, at

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch == self.at:
            raise self.error


def assert_as_the_user_had_them(model: keras.Model, optimizer: Any) -> None:
    assert optimizer.clipnorm == 1.0 and optimizer.global_clipnorm is None and optimizer.clipvalue is None
    assert not {"apply", "scale_loss"} & set(vars(optimizer))
    assert "train_step" not in vars(model)


@pytest.mark.parametrize(
    ("error", "ours_first"),
    [(KeyboardInterrupt(), True), (KeyboardInterrupt(), False), (ValueError("a callback's bug"), True)],
    ids=["keyboard-interrupt-after-ours", "keyboard-interrupt-before-ours", "callback-error"],
)
def test_an_interrupted_fit_leaves_nothing_behind(
    shared_server: Any, api: Api, error: BaseException, ours_first: bool
) -> None:
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1.0)
    model = model_with(optimizer)
    x, y = data()
    name = f"interrupt-{type(error).__name__}-{ours_first}"
    mon = monitor(shared_server, name)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])
    users = model.train_function
    boom = Boom(error)
    with pytest.raises(type(error)):
        model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[mon, boom] if ours_first else [boom, mon])
    assert_as_the_user_had_them(model, optimizer)  # at once, not only after the run is noticed to have ended
    run = run_named(api, name)
    api.status(run["id"], "interrupted")  # noticed by the watchdog: fit() never called on_train_end
    assert model.train_function is users and mon.lifecycle.phase is Phase.INTERRUPTED

    before = model.get_weights()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # without the monitor: works, reports nothing
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert_as_the_user_had_them(model, optimizer)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])  # with it: the same run goes on
    done = api.status(run["id"], "idle")
    assert done["step"] == int(optimizer.iterations.numpy()) - 1
    assert_as_the_user_had_them(model, optimizer)
    assert len([r for r in api.runs() if r["name"] == name]) == 1


def failing_batches(fail_at: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    x, y = data()
    for i in range(100):
        if i == fail_at:
            raise ValueError("a bad record")  # raised inside the compiled step, as a Ctrl-C during a step is
        j = (i * BATCH) % N
        yield x[j : j + BATCH], y[j : j + BATCH]


def test_an_error_inside_the_step_is_noticed_at_once(shared_server: Any, api: Api) -> None:
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1.0)
    model = model_with(optimizer)
    mon = monitor(shared_server, "in-step")
    dataset = tf.data.Dataset.from_generator(
        lambda: failing_batches(5),
        output_signature=(tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None,), tf.int32)),
    )
    with pytest.raises(Exception, match="a bad record"):
        model.fit(dataset, epochs=1, steps_per_epoch=50, verbose=0, callbacks=[mon])
    assert mon.lifecycle.phase is Phase.INTERRUPTED  # seen by the monitored function itself, no watchdog
    assert_as_the_user_had_them(model, optimizer)
    api.status(run_named(api, "in-step")["id"], "interrupted")


def test_a_watch_block_that_raises_is_interrupted_and_restores_clipping(shared_server: Any, api: Api) -> None:
    optimizer = keras.optimizers.SGD(0.05, clipnorm=1.0)
    model = model_with(optimizer)
    x, y = data()
    mon = monitor(shared_server, "watch-raises")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(KeyboardInterrupt), mon.watch(model, optimizer) as watch:
        for i in range(6):
            with tf.GradientTape() as tape:
                loss = loss_fn(y[:BATCH], model(x[:BATCH], training=True))
            watch.apply_gradients(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            if i == 3:
                raise KeyboardInterrupt
    assert optimizer.clipnorm == 1.0
    api.status(run_named(api, "watch-raises")["id"], "interrupted")


# ---------------------------------------------------------------------- watch() entered again


def test_watch_entered_every_epoch_around_a_traced_function_loses_no_step(shared_server: Any, api: Api) -> None:
    # The loop of keras-io's "Writing a training loop from scratch" (guides/writing_a_training_loop_from_scratch),
    # with the monitor's block entered once per epoch around the same tf.function.
    optimizer = keras.optimizers.SGD(0.05)
    model = model_with(optimizer)
    x, y = data(64 * BATCH)
    mon = monitor(shared_server, "watch-epochs")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    holder: dict[str, Any] = {}

    @tf.function
    def train_step(xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        holder["watch"].apply_gradients(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    for epoch in range(3):
        with mon.watch(model, optimizer) as watch:
            holder["watch"], watch.epoch = watch, epoch
            for i in range(64):
                train_step(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
        run = run_named(api, "watch-epochs")
        assert api.status(run["id"], "idle")["step"] == (epoch + 1) * 64 - 1
        if epoch == 0:  # (its first call may trace twice: the monitor's variables are made in the first trace)
            traces = train_step.experimental_get_tracing_count()
    assert api.steps(run["id"]) == list(range(192))
    assert train_step.experimental_get_tracing_count() == traces  # entering the block again retraced nothing


# ---------------------------------------------------------------------- an optimizer the monitor never sees


class OwnOptimizer(keras.Model):
    """A train_step that applies its gradients with an optimizer of its own, as a GAN's does
    (keras-io examples/generative/dcgan_overriding_train_step.py: ``compile(d_optimizer=..., g_optimizer=...)``),
    held where the monitor cannot find it (in a list; one in an attribute is watched: test_multi_optimizer.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)
        self.own = [keras.optimizers.Adam(1e-3)]

    def call(self, x: Any) -> Any:
        return self.dense(x)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(y, self(x), from_logits=True)
        grads = tape.gradient(loss, self.trainable_variables)
        self.own[0].apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": tf.reduce_mean(loss)}


def test_a_train_step_with_its_own_optimizer_warns_once_and_names_the_fix(shared_server: Any) -> None:
    model = OwnOptimizer()
    model.compile(optimizer="sgd")  # never used by the train_step
    x, y = data()
    mon = monitor(shared_server, "own-optimizer")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[mon])
    ours = [str(w.message) for w in caught if "gradwatch" in str(w.message)]
    assert len(ours) == 1, ours
    assert "applied no gradients" in ours[0] and "watch.apply_gradients" in ours[0]


# ---------------------------------------------------------------------- the state machine alone


def test_transitions_are_guarded() -> None:
    life = RunLifecycle(lambda *a: None, flush_timeout=0.0)  # type: ignore[arg-type, return-value]
    with pytest.raises(InvalidMove, match="cannot end a run that is idle"):
        life._move("end")
    left: list[int] = []
    hook: Any = object()
    life.begin(hook, None, None, 0, on_leave=lambda: left.append(1))
    assert life.phase is Phase.TRAINING
    life.interrupt()
    assert life.phase is Phase.INTERRUPTED and left == [1]
    life.interrupt()  # a second notice of the same end changes nothing
    assert left == [1]
    life.begin(hook, None, None, 5, on_leave=lambda: left.append(2))
    life.end()
    assert life.phase is Phase.IDLE and left == [1, 2]
    assert life.finish(0.0) and life.phase is Phase.FINISHED


def test_a_deep_copy_is_a_fresh_monitor_with_the_same_arguments(shared_server: Any, api: Api) -> None:
    import copy

    mon = monitor(shared_server, "copied", every=2)
    model = model_with(keras.optimizers.SGD(0.05))
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])
    clone = copy.deepcopy(mon)  # what Keras Tuner does with the callbacks of every trial
    assert clone.every == 2 and clone.lifecycle is not mon.lifecycle and clone.session is None
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[clone])
    api.wait(lambda: len([r for r in api.runs() if r["name"] == "copied"]) == 2, desc="a second run for the copy")


def test_resume_continues_the_run_of_a_restarted_job(shared_server: Any, api: Api, tmp_path: Any) -> None:
    # The checkpoint-resume case of a preempted job: train, save, "restart" (a new model and monitor
    # from the checkpoint), go on with resume="auto" (the newest run of that name), then by id.
    model = model_with(keras.optimizers.SGD(0.05))
    x, y = data()
    first = monitor(shared_server, "preempted")
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[first])
    model.save(tmp_path / "ckpt.keras")
    first.close(5)
    run = run_named(api, "preempted")
    assert api.status(run["id"], "finished")["step"] == 2 * STEPS - 1

    restored = keras.models.load_model(tmp_path / "ckpt.keras")
    second = monitor(shared_server, "preempted", resume="auto")
    restored.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[second])
    second.close(5)
    third = monitor(shared_server, "preempted", resume=run["id"])
    restored.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[third])
    api.wait(lambda: api.get(f"/api/runs/{run['id']}")["step"] == 4 * STEPS - 1, desc="the resumed steps")
    assert [r["id"] for r in api.runs() if r["name"] == "preempted"] == [run["id"]]
    assert api.steps(run["id"]) == list(range(4 * STEPS))


@pytest.mark.parametrize("bad", [0, -3, "latest", True, 1.5])
def test_resume_names_the_bad_value(bad: Any) -> None:
    with pytest.raises(ValueError, match=f"resume={bad!r}"):
        GradientMonitor(resume=bad)


def test_a_train_step_set_on_the_instance_is_used_and_kept(shared_server: Any) -> None:
    model = model_with(keras.optimizers.SGD(0.05))
    traced: list[int] = []
    default_step = model.train_step

    def own_step(data: Any) -> Any:
        traced.append(1)
        return default_step(data)

    model.train_step = own_step
    x, y = data()
    mon = monitor(shared_server, "own-step")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon])
    assert traced and vars(model)["train_step"] is own_step
    assert mon.stats is not None and int(mon.stats.step.numpy()) == STEPS
