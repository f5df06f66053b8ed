"""Small helpers for the fault tests that run a real ``model.fit`` with ``GradientMonitor``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import keras
import numpy as np

from gradwatch import GradientMonitor


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def data(n: int = 256, features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


class TimedMonitor(GradientMonitor):
    """GradientMonitor that records how long its per-step hook takes (a hang detector, not a benchmark)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_times: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        t0 = time.perf_counter()
        super().on_train_batch_end(batch, logs)
        self.batch_times.append(time.perf_counter() - t0)

    @property
    def worst(self) -> float:
        # The first call starts the session (creates the transport and its thread): not a per-step cost.
        return max(self.batch_times[1:], default=0.0)


class Pace(keras.callbacks.Callback):
    """Sleeps after each batch (so a few seconds of outage cover many steps) and ends fit when ``done()``.

    ``max_seconds`` is a hard bound on the whole fit, whatever happens.
    """

    def __init__(self, seconds: float, done: Callable[[], bool], max_seconds: float = 60.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.done = done
        self.deadline = time.monotonic() + max_seconds
        self.steps = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        time.sleep(self.seconds)  # the pace is the point: a run slow enough for the faults to land mid-run
        if self.done() or time.monotonic() > self.deadline:
            self.model.stop_training = True


class Script(threading.Thread):
    """Runs ``body`` beside ``fit`` (starting/killing the server); ``finished`` is set when it returns."""

    def __init__(self, body: Callable[[], None]) -> None:
        super().__init__(daemon=True, name="fault-script")
        self.body = body
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.body()
        except BaseException as err:  # reported by the test after fit
            self.error = err
        finally:
            self.finished.set()


def get(srv: Any, path: str, **params: Any) -> Any:
    r = httpx.get(srv.url + path, headers=srv.headers, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def covered(steps: list[int], gaps: list[dict[str, int]]) -> set[int]:
    """Every step either stored or inside a reported gap."""
    out = set(steps)
    for g in gaps:
        out.update(range(g["from_step"], g["to_step"] + 1))
    return out
