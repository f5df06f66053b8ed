"""The trainer's memory and queue stay bounded when the server is gone.

    python -m bench.trainer_memory [--quick] [--steps 3000] [--buffers 1,4] [--json out.json]

A child process trains an MLP (10 Dense layers, 20 variables) with ``GradientMonitor``
pointed at a dead loopback port, once per ``max_buffer_mb``. Every 100 steps it notes its
RSS (psutil) and the transport's buffered bytes and records; reported are the queue at the
end (bytes, records, dropped) against ``max_buffer_mb``, and the RSS growth over the second
half of the run (flat when bounded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench._common import common_args, fmt, write_json
from bench._server import free_port

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import warnings; warnings.simplefilter("ignore")
import keras, numpy as np, psutil
from gradwatch import GradientMonitor
port, steps, mb = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((32,))] + [keras.layers.Dense(32, activation="relu") for _ in range(9)]
                         + [keras.layers.Dense(10)])
model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
rng = np.random.default_rng(0)
x, y = rng.random((steps * 8, 32), np.float32), rng.integers(0, 10, steps * 8)
monitor = GradientMonitor(server=f"http://127.0.0.1:{port}", token="x" * 16, max_buffer_mb=mb, flush_timeout=0.5,
                          spool_mb=0)  # the in-memory bound alone (a spool would take the overflow to disk)
proc = psutil.Process()
class Probe(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch % 100 == 99:
            t = monitor.session.transport
            print(json.dumps({"step": batch + 1, "rss_mb": proc.memory_info().rss / 2**20,
                              "queue_bytes": t.outbox.queued_bytes, "queue_records": len(t.outbox.records),
                              "dropped": t.dropped}), flush=True)
model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor, Probe()])
"""


def run_one(steps: int, mb: float) -> dict[str, Any]:
    port = free_port()  # nothing listens there
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(port), str(steps), str(mb)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if not rows:
        raise RuntimeError(f"the training child reported nothing: {out.stderr[-2000:]}")
    half = rows[len(rows) // 2]
    last = rows[-1]
    return {
        "max_buffer_mb": mb,
        "steps": last["step"],
        "queue_bytes_end": last["queue_bytes"],
        "queue_records_end": last["queue_records"],
        "queue_max_bytes": max(r["queue_bytes"] for r in rows),
        "dropped": last["dropped"],
        "bound_bytes": int(mb * 2**20),
        "rss_mb_half": half["rss_mb"],
        "rss_mb_end": last["rss_mb"],
        "rss_growth_second_half_mb": last["rss_mb"] - half["rss_mb"],
        "series": rows[:: max(1, len(rows) // 20)],
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "| max_buffer_mb | steps | queue at end (bytes) | records queued | dropped | queue ≤ bound "
        "| RSS at half (MiB) | RSS at end (MiB) | RSS growth 2nd half (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        ok = "yes" if x["queue_max_bytes"] <= x["bound_bytes"] else "no"
        lines.append(
            f"| {x['max_buffer_mb']:g} | {x['steps']:,} | {x['queue_bytes_end']:,} | "
            f"{x['queue_records_end']:,} | {x['dropped']:,} | {ok} | {fmt(x['rss_mb_half'])} "
            f"| {fmt(x['rss_mb_end'])} | {fmt(x['rss_growth_second_half_mb'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.trainer_memory", __doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--buffers", default="0.25,1")
    args = p.parse_args(argv)
    steps, buffers = (600, [0.1]) if args.quick else (args.steps, [float(b) for b in args.buffers.split(",")])
    result = {"runs": [run_one(steps, mb) for mb in buffers]}
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
