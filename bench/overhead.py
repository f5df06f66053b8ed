"""Training overhead of GradientMonitor against plain `model.fit`, with TensorBoard as the reference.

    python -m bench.overhead [--quick] [--rounds 5] [--models mlp,mobilenetv2] [--json out.json]

Every configuration trains its own copy of the same model (same seed, same
data). Rounds interleave the configurations (A B C D, A B C D, ...). In each
fit the first epoch is warm-up (tracing, connecting) and is not timed; the
second epoch is timed step by step by a callback placed after all others, so
it includes every callback's own cost. Reported per configuration:

- ``step_ratio``: median over rounds of (median step period / same round's plain median);
- ``epoch_ratio``: median over rounds of (timed epoch wall time / plain's), which also
  counts work done at epoch end (TensorBoard writes its histograms there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from bench._common import write_json
from bench._server import BenchServer


class StepClock(keras.callbacks.Callback):
    """Timestamps of every batch end and epoch end (put it last in the callback list)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_ends: list[list[float]] = []
        self.epoch_ends: list[float] = []
        self.start = 0.0

    def on_train_begin(self, logs: Any = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.batch_ends.append([])

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batch_ends[-1].append(time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.epoch_ends.append(time.perf_counter())


def mlp() -> tuple[keras.Model, np.ndarray, np.ndarray, int]:
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    rng = np.random.default_rng(0)
    return model, rng.random((256 * 150, 784), np.float32), rng.integers(0, 10, 256 * 150), 256


def mobilenetv2() -> tuple[keras.Model, np.ndarray, np.ndarray, int]:
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None  # logits, as the loss expects
    )
    rng = np.random.default_rng(0)
    return model, rng.random((32 * 40, 64, 64, 3), np.float32), rng.integers(0, 10, 32 * 40), 32


MODELS: dict[str, Callable[[], tuple[keras.Model, np.ndarray, np.ndarray, int]]] = {
    "mlp": mlp,
    "mobilenetv2": mobilenetv2,
}


def configs(server: BenchServer, logdir: str) -> dict[str, Callable[[], list[keras.callbacks.Callback]]]:
    from gradwatch import GradientMonitor

    def monitor(every: int) -> Callable[[], list[keras.callbacks.Callback]]:
        return lambda: [GradientMonitor(server=server.url, token=server.token, every=every, run_name=f"bench-{every}")]

    return {
        "plain": lambda: [],
        "gradwatch every=1": monitor(1),
        "gradwatch every=10": monitor(10),
        "tensorboard histogram_freq=1": lambda: [keras.callbacks.TensorBoard(logdir, histogram_freq=1)],
    }


def measure(model_name: str, rounds: int, server: BenchServer, include_tb: bool) -> dict[str, Any]:
    logdir = tempfile.mkdtemp(prefix="gradwatch-bench-tb-")
    make_callbacks = configs(server, logdir)
    if not include_tb:
        make_callbacks.pop("tensorboard histogram_freq=1")
    models = {}
    for name in make_callbacks:
        keras.utils.set_random_seed(0)
        model, x, y, batch = MODELS[model_name]()
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(True))
        models[name] = model
    step_medians: dict[str, list[float]] = {n: [] for n in make_callbacks}
    epoch_times: dict[str, list[float]] = {n: [] for n in make_callbacks}
    for _ in range(rounds):
        for name, callbacks in make_callbacks.items():
            clock = StepClock()
            models[name].fit(x, y, batch_size=batch, epochs=2, verbose=0, callbacks=[*callbacks(), clock])
            timed = clock.batch_ends[1]
            periods = np.diff([clock.epoch_ends[0], *timed])
            step_medians[name].append(float(np.median(periods)))
            epoch_times[name].append(clock.epoch_ends[1] - clock.epoch_ends[0])
    steps = len(clock.batch_ends[1])
    result: dict[str, Any] = {"model": model_name, "rounds": rounds, "steps_per_epoch": steps, "configs": {}}
    for name in make_callbacks:
        result["configs"][name] = {
            "median_step_ms": 1e3 * statistics.median(step_medians[name]),
            "step_ratio": statistics.median(a / b for a, b in zip(step_medians[name], step_medians["plain"])),
            "epoch_ratio": statistics.median(a / b for a, b in zip(epoch_times[name], epoch_times["plain"])),
        }
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | configuration | median step (ms) | step-time ratio | epoch-time ratio |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for name, c in r["configs"].items():
            lines.append(
                f"| {r['model']} | {name} | {c['median_step_ms']:.2f} "
                f"| {c['step_ratio']:.3f} | {c['epoch_ratio']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round of the MLP only, no TensorBoard (CI smoke test)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default="mlp,mobilenetv2")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    names = ["mlp"] if args.quick else args.models.split(",")
    rounds = 1 if args.quick else args.rounds
    include_tb = not args.quick
    if include_tb:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            print("tensorboard is not installed (pip install tensorboard); skipping that reference", file=sys.stderr)
            include_tb = False
    with BenchServer() as server:
        results = [measure(n, rounds, server, include_tb) for n in names]
    print(markdown(results))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
