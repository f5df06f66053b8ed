"""The fixed cost of a later ``fit()`` with the monitor: ten ``fit(epochs=1)`` calls of a small CNN.

    python -m bench.later_fit [--quick] [--fits 10] [--rounds 3] [--json out.json]

Two identical models train side by side, fits interleaved (monitored, plain, monitored, ...):
one with a single ``GradientMonitor`` reused for every fit (the notebook pattern), one without.
Reported: the whole-``fit()`` wall time of each, the first fit (which traces the step) apart
from the later ones; the later-fit cost is the median of (monitored − plain) over the later
fits of every round. A real ``gradwatch serve`` on loopback receives the run.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench._common import common_args, fmt, machine, median, write_json
from bench._server import BenchServer


def small_cnn() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def one_round(server: BenchServer, fits: int, examples: int) -> dict[str, list[float]]:
    import numpy as np

    from gradwatch import GradientMonitor

    rng = np.random.default_rng(0)
    x = rng.random((examples, 28, 28, 1), np.float32)
    y = rng.integers(0, 10, examples)
    monitored, plain = small_cnn(), small_cnn()
    mon = GradientMonitor(server=server.url, token=server.token, run_name="bench later fit")
    times: dict[str, list[float]] = {"monitored": [], "plain": []}
    for _ in range(fits):
        for name, model, callbacks in (("monitored", monitored, [mon]), ("plain", plain, [])):
            start = time.perf_counter()
            model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=callbacks)
            times[name].append(time.perf_counter() - start)
    mon.close(10)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common_args("bench.later_fit", __doc__)
    p.add_argument("--fits", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--examples", type=int, default=512, help="examples per fit (batch 64)")
    args = p.parse_args(argv)
    if args.quick:
        args.fits, args.rounds = 3, 1
    warnings.simplefilter("ignore")
    rounds = []
    with BenchServer() as server:
        for _ in range(args.rounds):
            rounds.append(one_round(server, args.fits, args.examples))
    later_deltas = [m - p_ for r in rounds for m, p_ in zip(r["monitored"][1:], r["plain"][1:])]
    result = {
        "machine": machine(),
        "fits": args.fits,
        "rounds": args.rounds,
        "steps_per_fit": args.examples // 64,
        "first_fit_s": {k: median([r[k][0] for r in rounds]) for k in ("monitored", "plain")},
        "later_fit_s": {k: median([t for r in rounds for t in r[k][1:]]) for k in ("monitored", "plain")},
        "later_fit_cost_ms": 1e3 * median(later_deltas),
        "later_fit_cost_ms_max": 1e3 * max(later_deltas),
        "rounds_raw": rounds,
    }
    write_json(args.json, result)
    print(
        f"first fit: monitored {fmt(result['first_fit_s']['monitored'], 3)} s, "
        f"plain {fmt(result['first_fit_s']['plain'], 3)} s\n"
        f"later fits (median): monitored {fmt(result['later_fit_s']['monitored'], 3)} s, "
        f"plain {fmt(result['later_fit_s']['plain'], 3)} s\n"
        f"cost of a later monitored fit: median {fmt(result['later_fit_cost_ms'])} ms, "
        f"max {fmt(result['later_fit_cost_ms_max'])} ms "
        f"({args.rounds} rounds x {args.fits - 1} later fits of {result['steps_per_fit']} steps)"
    )
    return result


if __name__ == "__main__":
    main()
