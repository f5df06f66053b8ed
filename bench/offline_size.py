"""Size of an offline run file per step (``GradientMonitor(mode="offline")``; docs/performance.md).

    python -m bench.offline_size [--quick] [--json out.json]

1. A real Keras run: a 10-layer MLP (20 variables) trained for ``--steps`` steps in offline mode;
   the file's bytes per step (header and hello included), and gzip's ratio for reference.
2. Wider models without training: realistic ``StepRecord``s (``bench._common.record``) of 200
   and 2,000 variables written through the trainer's own ``RunFile`` in full ``steps`` frames.
"""

from __future__ import annotations

import gzip
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import common_args, grad_values, hello, machine, record, write_json
from gradwatch.protocol import TrainerHello, dumps

MLP_LAYERS = 10


def keras_run(steps: int, workdir: Path) -> dict[str, Any]:
    import keras
    import numpy as np

    from gradwatch import GradientMonitor

    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(64, activation="relu") for _ in range(MLP_LAYERS - 1)]
    model = keras.Sequential([keras.Input((32,)), *layers, keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((steps * 32, 32)).astype("float32")
    y = (np.abs(x[:, 0]) * 3).astype("int32") % 10
    monitor = GradientMonitor(mode="offline", log_dir=workdir, run_name="size-bench")
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[monitor], verbose=0)
    assert monitor.close(timeout=30)
    (path,) = workdir.glob("*.gwrun.jsonl")
    raw = path.read_bytes()
    return {
        "variables": 2 * MLP_LAYERS,
        "steps": steps,
        "bytes": len(raw),
        "bytes_per_step": len(raw) / steps,
        "gzip_ratio": len(raw) / len(gzip.compress(raw)),
    }


def synthetic(n_vars: int, steps: int, workdir: Path) -> dict[str, Any]:
    from gradwatch.trainer_hooks.outbox import MAX_BATCH
    from gradwatch.trainer_hooks.spool import RunFile

    run_file = RunFile(workdir, "0" * 32, f"synthetic-{n_vars}", "offline")
    run_file.open(TrainerHello.model_validate({**hello("size", n_vars), "uid": "0" * 32}).model_dump_json())
    grads = grad_values(n_vars)
    t0 = time.perf_counter()
    for first in range(0, steps, MAX_BATCH):
        records = [record(s, 1.7e9 + s * 0.02, grads) for s in range(first, min(steps, first + MAX_BATCH))]
        run_file.send(dumps({"type": "steps", "records": records}))
    seconds = time.perf_counter() - t0
    run_file.close()
    return {
        "variables": n_vars,
        "steps": steps,
        "bytes": run_file.size,
        "bytes_per_step": run_file.size / steps,
        "write_us_per_step": seconds / steps * 1e6,
    }


def main() -> None:
    parser = common_args("bench.offline_size", __doc__)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    steps = 200 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        rows = [keras_run(steps, Path(tmp) / "keras")]
        rows += [synthetic(n, steps, Path(tmp) / f"s{n}") for n in (200, 2000)]
    print("| source | variables | steps | file (KB) | bytes per step |")
    print("|---|---|---|---|---|")
    for i, row in enumerate(rows):
        source = "Keras MLP, offline mode" if i == 0 else "synthetic records"
        print(
            f"| {source} | {row['variables']} | {row['steps']} | {row['bytes'] / 1e3:.1f} | "
            f"{row['bytes_per_step']:.0f} |"
        )
    print(f"gzip would shrink the Keras run's file {rows[0]['gzip_ratio']:.1f}x")
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
