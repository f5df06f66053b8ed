"""The cost of the monitor inside the compiled train step alone, in microseconds per step.

    python -m bench.step_cost [--model mlp] [--steps 800] [--variant name:kwarg=value,...] [--jit-compile]
                              [--clip global_clipnorm=1.0]

A variant's values are JSON; ``probe_data="batch"`` stands for the model's own batch (with
``probe_data`` the step keeps no batch for the probe: compare with the defaults to see that cost).
``--clip`` gives every model's optimizer, the plain one's too, Keras' own clipping (the monitor adopts it).

No ``fit`` loop, no server, no callback work between steps: each model's compiled train
function is called directly on one fixed batch, and the calls alternate step by step
(plain, monitored, plain, monitored, ...), so slow drifts of the machine cancel out. This
isolates what the statistics and live clipping add to the graph, with a noise of about
±50 µs on the MLP, where ``bench.overhead`` (whole fits, interleaved by round) sees ±5 %.

The monitor points at a closed port: it never connects, which costs the graph nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

from bench._common import write_json
from bench.overhead import MODELS, compiled


def compiled_step(
    model_name: str,
    monitor_kwargs: dict[str, Any] | None,
    jit_compile: bool | str = "auto",
    clip: dict[str, float] | None = None,
) -> Any:
    """A warmed-up zero-argument step function of a fresh model, monitored if kwargs are given."""
    from gradwatch import GradientMonitor

    model, x, y, batch = compiled(model_name, jit_compile)
    for attr, value in (clip or {}).items():  # read when the step is traced, below
        setattr(model.optimizer, attr, value)
    data = iter(tf.data.Dataset.from_tensors((x[:batch], y[:batch])).repeat())
    model.make_train_function()
    if monitor_kwargs is not None:
        if monitor_kwargs.get("probe_data") == "batch":
            monitor_kwargs = {**monitor_kwargs, "probe_data": x[:batch]}
        monitor = GradientMonitor(server="http://127.0.0.1:9", token="x" * 32, **monitor_kwargs)
        monitor.set_model(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monitor.on_train_begin()  # installs the hook and rebuilds the train function
    train = model.train_function

    def step() -> None:
        float(train(data)["loss"])  # wait for the step to finish

    for _ in range(20):  # tracing and warm-up
        step()
    return step


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, kwargs = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, kwargs.split(",")):
        key, _, value = item.partition("=")
        options[key] = json.loads(value)
    return name, options


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.step_cost", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument(
        "--variant",
        action="append",
        default=None,
        help="name:kwarg=json,... of GradientMonitor (default: monitored: with the defaults)",
    )
    p.add_argument("--jit-compile", action="store_true", help="compile the steps with XLA (jit_compile=True)")
    p.add_argument("--clip", default=None, help="the optimizers' own clipping, e.g. global_clipnorm=1.0")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    clip = parse_variant(f"clip:{args.clip}")[1] if args.clip else None
    jit: bool | str = True if args.jit_compile else "auto"
    variants = dict(parse_variant(v) for v in (args.variant or ["monitored:"]))
    steps = {"plain": compiled_step(args.model, None, jit, clip)}
    steps.update({name: compiled_step(args.model, kwargs, jit, clip) for name, kwargs in variants.items()})
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    variants = report(args.model, times, cpu)
    write_json(args.json, {"model": args.model, "steps": args.steps, "load_avg": os.getloadavg(), "variants": variants})
    return 0


def report(
    model: str, times: dict[str, list[float]], cpu: dict[str, list[float]] | None = None
) -> dict[str, dict[str, float]]:
    """Print the median step of each variant against ``times["plain"]``; the same figures as JSON.

    ``cpu``: the process CPU time of each step (all threads), steadier than wall time on a shared machine.
    """
    base = statistics.median(times["plain"])
    cpu_base = statistics.median(cpu["plain"]) if cpu else 0.0
    variants = {}
    extra = " CPU median (ms) | CPU ratio |" if cpu else ""
    print(f"| {model} | median step (ms) | added (µs) | ratio |{extra}\n|---|---|---|---|{'---|---|' if cpu else ''}")
    for name, t in times.items():
        med = statistics.median(t)
        variants[name] = {"median_ms": 1e3 * med, "added_us": 1e6 * (med - base), "ratio": med / base}
        line = f"| {name} | {1e3 * med:.3f} | {1e6 * (med - base):.0f} | {med / base:.4f} |"
        if cpu:
            c = statistics.median(cpu[name])
            variants[name].update({"cpu_median_ms": 1e3 * c, "cpu_ratio": c / cpu_base if cpu_base else float("nan")})
            line += f" {1e3 * c:.3f} | {variants[name]['cpu_ratio']:.4f} |"
        print(line)
    return variants


if __name__ == "__main__":
    sys.exit(main())
