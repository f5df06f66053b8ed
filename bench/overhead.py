"""Training overhead of GradientMonitor against plain `model.fit`, with TensorBoard as the reference.

    python -m bench.overhead [--quick] [--rounds 3] [--epochs 3] [--block 10]
                             [--models mlp,mobilenetv2] [--jit-compile] [--json out.json]

``--jit-compile`` compiles every configuration's step with XLA (``compile(jit_compile=True)``,
what Keras' default ``"auto"`` picks on a GPU), plain fit included.

Every configuration trains its own copy of the same model (same seed, same data),
each ``fit`` in its own thread, and they take turns: a relay lets one fit run
``--block`` steps, then the next, round-robin (A×10 B×10 C×10 D×10 A×10 ...).
The machine's drift (other tenants, frequency, a fit's own noise, easily ±10 %
over a second here) is then shared by all configurations within a fraction of
a second, where whole fits run one after another could not resolve a few per
cent. A step period starts at the previous batch end, or when the fit got its
turn back, and ends at its batch end; it includes every callback's own work.
The first step of each epoch is not timed: under the relay, whichever fit
crossed an epoch boundary first often waited a second or more there (in
TensorFlow's input pipeline, not in any callback), which would swamp the
means; so TensorBoard's histograms, written at epoch end, are not counted
either. Work a monitor leaves to background threads (sending, the server's
ingest) runs on the same two cores and slows whoever is running, so little of
it is charged to the fit that caused it: ``bench.server_cpu`` measures that CPU
per record. The first epoch (tracing, connecting) is not timed.

Reported per configuration, each the median over rounds of a ratio to the same
round's plain fit:

- ``step_ratio``: median step period / plain's median step period;
- ``mean_ratio``: mean step period / plain's, which also counts occasional work
  (host samples every so many steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from bench._common import write_json
from bench._server import BenchServer


class Relay:
    """Round-robin turns among ``n`` fits, ``block`` steps each; a finished fit drops out."""

    def __init__(self, n: int, block: int) -> None:
        self.block = block
        self._turn = 0
        self._done = [False] * n
        self._cond = threading.Condition()

    def wait(self, i: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == i or all(self._done))

    def pass_on(self, i: int) -> None:
        with self._cond:
            n = len(self._done)
            self._turn = next((j % n for j in range(i + 1, i + 1 + n) if not self._done[j % n]), -1)
            self._cond.notify_all()

    def leave(self, i: int) -> None:
        """Fit ``i`` is over (or failed): once it has the turn, drop out and hand it on."""
        with self._cond:
            if self._done[i]:
                return
            self._cond.wait_for(lambda: self._turn == i)
            self._done[i] = True
        self.pass_on(i)


class Turn(keras.callbacks.Callback):
    """Times every step of epochs after the first; takes and hands back the relay (put it last)."""

    def __init__(self, relay: Relay, index: int) -> None:
        super().__init__()
        self.relay, self.index = relay, index
        self.periods: list[float] = []
        self._last, self._count, self._epoch = 0.0, 0, 0

    def on_train_begin(self, logs: Any = None) -> None:
        self.relay.wait(self.index)
        self._last = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        now = time.perf_counter()
        if self._epoch > 0 and batch > 0:
            self.periods.append(now - self._last)
        self._count += 1
        if self._count % self.relay.block == 0:
            self.relay.pass_on(self.index)
            self.relay.wait(self.index)
            now = time.perf_counter()
        self._last = now

    def on_train_end(self, logs: Any = None) -> None:
        self.relay.leave(self.index)


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
        weights=None,
        input_shape=(64, 64, 3),
        classes=10,
        classifier_activation=None,  # logits, as the loss expects
    )
    rng = np.random.default_rng(0)
    return model, rng.random((32 * 40, 64, 64, 3), np.float32), rng.integers(0, 10, 32 * 40), 32


def text() -> tuple[keras.Model, np.ndarray, np.ndarray, int]:
    """A text classifier whose Embedding (vocabulary 20,000) gets a sparse gradient: 64 x 40 ids a batch."""
    model = keras.Sequential(
        [
            keras.Input((40,), dtype="int32"),
            keras.layers.Embedding(20_000, 64),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    rng = np.random.default_rng(0)
    ids = np.minimum(rng.zipf(1.3, (64 * 100, 40)), 20_000) - 1  # word-like: a few ids often, most rarely
    return model, ids.astype(np.int32), rng.integers(0, 2, 64 * 100), 64


MODELS: dict[str, Callable[[], tuple[keras.Model, np.ndarray, np.ndarray, int]]] = {
    "mlp": mlp,
    "mobilenetv2": mobilenetv2,
    "text": text,
}


def compiled(model_name: str, jit_compile: bool | str = "auto") -> tuple[keras.Model, np.ndarray, np.ndarray, int]:
    """A fresh copy of a benchmark model (same seed every time), compiled the same way everywhere."""
    keras.utils.set_random_seed(0)
    model, x, y, batch = MODELS[model_name]()
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(True),
        jit_compile=jit_compile,
    )
    return model, x, y, batch


def pipeline(x: np.ndarray, y: np.ndarray, batch: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(2)


def configs(
    server: BenchServer, logdir: str, decompose: bool = False
) -> dict[str, Callable[[], list[keras.callbacks.Callback]]]:
    from gradwatch import GradientMonitor

    class GraphOnly(GradientMonitor):
        """The monitored step, with no host work between steps (no reads, no session, no sending)."""

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            pass

    def monitor(every: int, cls: type = GradientMonitor, url: str = server.url) -> Callable[[], list[Any]]:
        return lambda: [cls(server=url, token=server.token, every=every, run_name=f"bench-{every}", flush_timeout=1.0)]

    found = {
        "plain": lambda: [],
        "gradwatch every=1": monitor(1),
        "gradwatch every=10": monitor(10),
        "tensorboard histogram_freq=1": lambda: [keras.callbacks.TensorBoard(logdir, histogram_freq=1)],
    }
    if decompose:  # where the cost of every=1 goes: the step, then the host's reads, then sending
        found["every=1 graph only"] = monitor(1, GraphOnly)
        found["every=1 server unreachable"] = monitor(1, url="http://127.0.0.1:9")
    return found


def run_round(
    models: dict[str, Any],
    make_callbacks: dict[str, Callable[[], list[Any]]],
    data: tuple[Any, Any, int],
    epochs: int,
    block: int,
) -> dict[str, list[float]]:
    """One round: every configuration's fit in its own thread, taking turns; step periods per configuration."""
    x, y, batch = data
    datasets = {name: pipeline(x, y, batch) for name in models}
    relay = Relay(len(models), block)
    turns = {name: Turn(relay, i) for i, name in enumerate(models)}
    errors: list[BaseException] = []

    def fit(name: str) -> None:
        try:
            models[name].fit(datasets[name], epochs=epochs, verbose=0, callbacks=[*make_callbacks[name](), turns[name]])
        except BaseException as err:  # reported below; the other fits must not wait for this one
            errors.append(err)
            relay.leave(turns[name].index)

    threads = [threading.Thread(target=fit, args=(name,), name=f"fit {name}") for name in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {name: turn.periods for name, turn in turns.items()}


def measure(
    model_name: str,
    rounds: int,
    epochs: int,
    block: int,
    server: BenchServer,
    include_tb: bool,
    decompose: bool = False,
    jit_compile: bool | str = "auto",
) -> dict[str, Any]:
    logdir = tempfile.mkdtemp(prefix="gradwatch-bench-tb-")
    make_callbacks = configs(server, logdir, decompose)
    if not include_tb:
        make_callbacks.pop("tensorboard histogram_freq=1")
    models = {}
    for name in make_callbacks:
        models[name], x, y, batch = compiled(model_name, jit_compile)
    medians: dict[str, list[float]] = {n: [] for n in make_callbacks}
    means: dict[str, list[float]] = {n: [] for n in make_callbacks}
    for _ in range(rounds):
        periods = run_round(models, make_callbacks, (x, y, batch), 1 + epochs, block)
        for name, p in periods.items():
            medians[name].append(float(np.median(p)))
            means[name].append(float(np.mean(p)))
    result: dict[str, Any] = {
        "model": model_name,
        "jit_compile": jit_compile,
        "rounds": rounds,
        "timed_epochs": epochs,
        "block": block,
        "steps_per_epoch": -(-len(x) // batch),
        "configs": {},
    }
    for name in make_callbacks:
        result["configs"][name] = {
            "median_step_ms": 1e3 * statistics.median(medians[name]),
            "step_ratio": statistics.median(a / b for a, b in zip(medians[name], medians["plain"])),
            "mean_ratio": statistics.median(a / b for a, b in zip(means[name], means["plain"])),
            "round_step_ratios": [round(a / b, 4) for a, b in zip(medians[name], medians["plain"])],
        }
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | configuration | median step (ms) | step-time ratio | mean-step ratio | per round |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, c in r["configs"].items():
            lines.append(
                f"| {r['model']} | {name} | {c['median_step_ms']:.2f} "
                f"| {c['step_ratio']:.3f} | {c['mean_ratio']:.3f} "
                f"| {' '.join(f'{r:.3f}' for r in c['round_step_ratios'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="one round, one timed epoch, MLP only, no TensorBoard (CI smoke test)"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per fit (after one warm-up epoch)")
    p.add_argument("--block", type=int, default=10, help="steps a fit runs before handing over")
    p.add_argument("--models", default="mlp,mobilenetv2")
    p.add_argument(
        "--decompose",
        action="store_true",
        help="also every=1 with no host work between steps, and with the server unreachable",
    )
    p.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile every fit's step with XLA (jit_compile=True) instead of Keras' 'auto'",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    names = ["mlp"] if args.quick else args.models.split(",")
    rounds, epochs = (1, 1) if args.quick else (args.rounds, args.epochs)
    include_tb = not args.quick
    if include_tb:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            print("tensorboard is not installed (pip install tensorboard); skipping that reference", file=sys.stderr)
            include_tb = False
    with BenchServer() as server:
        jit: bool | str = True if args.jit_compile else "auto"
        results = [measure(n, rounds, epochs, args.block, server, include_tb, args.decompose, jit) for n in names]
    print(markdown(results))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
