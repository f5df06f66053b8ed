"""What a rewind snapshot costs (issue 19): one host copy of the model's and the optimizer's variables.

    python -m bench.snapshot_cost [--repeats 20] [--json out.json]

For MLPs of growing size trained with Adam (so the optimizer holds two slots per weight): the time of one
``Snapshots.take`` (copy + finiteness check) and one ``restore``, the median of ``--repeats``, next to the
median time of one training step of the same model (``train_on_batch``, batch 256), and what a snapshot
every ``DEFAULT_EVERY`` steps adds to training on average. No server: the snapshot is host work only.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from gradwatch.trainer_hooks.snapshots import DEFAULT_EVERY, Snapshots, state_variables

from bench._common import fmt, machine, median, write_json

#: (name, hidden width, hidden layers) of the models measured.
SIZES = [("mlp-0.3M", 512, 1), ("mlp-4M", 1024, 4), ("mlp-17M", 2048, 4)]


def model_of(width: int, depth: int) -> Any:
    model = keras.Sequential(
        [
            keras.Input((784,)),
            *(keras.layers.Dense(width, activation="relu") for _ in range(depth)),
            keras.layers.Dense(10),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def measure(width: int, depth: int, repeats: int) -> dict[str, Any]:
    model = model_of(width, depth)
    x = np.random.default_rng(0).standard_normal((256, 784)).astype("float32")
    y = np.zeros(256, "int32")
    model.train_on_batch(x, y)  # traces, builds the optimizer's slots
    steps = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        steps.append(time.perf_counter() - t)
    variables = state_variables(model, [model.optimizer])
    snaps = Snapshots(variables, every=1, keep=2, budget_bytes=2**40)
    takes, restores = [], []
    for i in range(repeats):
        t = time.perf_counter()
        snaps.take(i)
        takes.append(time.perf_counter() - t)
        t = time.perf_counter()
        snaps.restore(snaps.newest_at_or_before(i) or snaps.newest_at_or_before(10**9))  # type: ignore[arg-type]
        restores.append(time.perf_counter() - t)
    step, take = median(steps), median(takes)
    return {
        "params": model.count_params(),
        "snapshot_mib": snaps.size / 2**20,
        "take_ms": take * 1e3,
        "restore_ms": median(restores) * 1e3,
        "step_ms": step * 1e3,
        "overhead_pct_every_default": 100 * take / (DEFAULT_EVERY * step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    rows = {name: measure(width, depth, args.repeats) for name, width, depth in SIZES}
    print(
        f"{'model':10} {'params':>11} {'MiB':>7} {'take ms':>8} {'restore ms':>10} {'step ms':>8} "
        f"{'every ' + str(DEFAULT_EVERY):>9}"
    )
    for name, r in rows.items():
        print(
            f"{name:10} {fmt(r['params']):>11} {fmt(r['snapshot_mib']):>7} {fmt(r['take_ms'], 2):>8} "
            f"{fmt(r['restore_ms'], 2):>10} {fmt(r['step_ms'], 1):>8} {fmt(r['overhead_pct_every_default'], 2):>8}%"
        )
    write_json(args.json, {"machine": machine(), "every": DEFAULT_EVERY, "models": rows})


if __name__ == "__main__":
    main()
