"""Where the monitor's host time goes between steps, and the server's CPU per training step (a diagnostic).

    python -m bench.host_cost [--model mlp] [--every 1] [--epochs 3]

Trains one model with a ``GradientMonitor`` streaming to a real ``gradwatch serve``
on the same machine, with the trainer's host-side work timed method by method
(``time.perf_counter`` around each call; the first epoch, with tracing and
connecting, is not counted). The server's CPU comes from ``/proc/<pid>/stat``.
Reported per training step: the average cost of each part, and each part's
median and p90 per call, for the parts that run on some steps only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from bench._common import write_json
from bench._server import BenchServer
from bench.overhead import MODELS, compiled, pipeline

#: (module, class, method) timed, in the order printed.
PARTS = [
    ("session", "RunSession", "after_steps"),  # the whole per-step host cost, all parts below included
    ("graph_stats", "GradientStats", "read"),
    ("bn_stats", "BatchNormSampler", "sample"),
    ("update_ratio", "UpdateRatio", "keep"),
    ("update_ratio", "UpdateRatio", "measure"),
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Timed:
    """Wraps the ``PARTS`` methods to record each call's duration while ``on`` (restores them on exit)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self.on = False
        self._saved: list[tuple[type, str, Callable[..., Any]]] = []

    def __enter__(self) -> Timed:
        import importlib

        for module, cls_name, method in PARTS:
            cls = getattr(importlib.import_module(f"gradwatch.trainer_hooks.{module}"), cls_name)
            original = getattr(cls, method)
            key = f"{cls_name}.{method}"
            self.calls[key] = []

            def timed(*args: Any, _f: Callable[..., Any] = original, _k: str = key, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    if self.on:
                        self.calls[_k].append(time.perf_counter() - start)

            self._saved.append((cls, method, original))
            setattr(cls, method, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, method, original in self._saved:
            setattr(cls, method, original)


def measure(model_name: str, every: int, epochs: int) -> dict[str, Any]:
    from gradwatch import GradientMonitor

    model, x, y, batch = compiled(model_name)
    data = pipeline(x, y, batch)
    with BenchServer() as server, Timed() as timed:
        marks: dict[str, float] = {}

        class Window(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if epoch == 0:  # warm-up over: count from here
                    timed.on = True
                    marks.update(server=cpu_seconds(server.pid), wall=time.perf_counter())

            def on_train_end(self, logs: Any = None) -> None:
                timed.on = False
                marks.update(server=cpu_seconds(server.pid) - marks["server"], wall=time.perf_counter() - marks["wall"])

        monitor = GradientMonitor(server=server.url, token=server.token, every=every, run_name="host-cost")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(data, epochs=1 + epochs, verbose=0, callbacks=[monitor, Window()])
    steps = len(timed.calls["RunSession.after_steps"])
    parts = {}
    for key, durations in timed.calls.items():
        d = np.asarray(durations) * 1e6
        parts[key] = {
            "calls": len(d),
            "us_per_step": float(d.sum() / max(steps, 1)),
            "median_us": float(np.median(d)) if len(d) else None,
            "p90_us": float(np.percentile(d, 90)) if len(d) else None,
        }
    return {
        "model": model_name,
        "every": every,
        "steps": steps,
        "step_ms": 1e3 * marks["wall"] / max(steps, 1),
        "server_cpu_us_per_step": 1e6 * marks["server"] / max(steps, 1),
        "parts": parts,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.host_cost", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    r = measure(args.model, args.every, args.epochs)
    print(
        f"{r['model']}, every={r['every']}: {r['steps']} steps of {r['step_ms']:.2f} ms; "
        f"server CPU {r['server_cpu_us_per_step']:.0f} µs per step\n"
    )
    print("| part | calls | µs per step | median µs per call | p90 µs per call |\n|---|---|---|---|---|")
    for key, part in r["parts"].items():
        med, p90 = (f"{part[k]:.0f}" if part[k] is not None else "-" for k in ("median_us", "p90_us"))
        print(f"| {key} | {part['calls']} | {part['us_per_step']:.0f} | {med} | {p90} |")
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
