"""Server CPU time per ingested step record, and while idle: what `gradwatch serve` takes from training.

    nice -n 19 .venv/bin/python -m bench.server_cpu [--shapes mlp,mobilenet] [--seconds 15]
        [--viewer] [--idle 5] [--profile out.prof] [--json out.json]

Starts a real ``gradwatch serve`` (``bench._server.BenchServer``), measures its idle CPU for
``--idle`` seconds, then, per shape, connects a simulated trainer that paces its records the way
``GradientMonitor`` does and reports the server process's CPU time (``psutil`` user + system,
all threads) per record. CPU time, not wall time, so other load on the machine matters little;
run it under ``nice -n 19`` all the same.

Shapes (from the overhead benchmark's two models, every step reported):

* ``mlp``: 8 variables, 1 BatchNormalization layer, 150 steps/s;
* ``mobilenet``: 158 variables (MobileNetV2), 52 BatchNormalization layers, 8 steps/s.

The simulated trainer follows ``trainer_hooks``: the callback reads its statistics ring at the
first step end at least 20 ms after its previous read (or 8 steps after it), and the sender
lingers 30 ms after the first queued record, then sends everything queued (at most 64) as one
``steps`` frame. Records carry every field the callback sends: float32 values printed at full
repr, BN rows every step, update ratios every 10th step. The schedule is computed in advance,
so every run sends the same frames at the same offsets. ``--viewer`` subscribes one
browser-like websocket to the run (each frame is then also fanned out).

Reported per shape: CPU ms per record (raw, and net of the idle rate over the same wall time),
the split between the event-loop thread and the other threads (SQLite, executors), frames,
records per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import psutil

from bench._common import common_args, machine, open_browser, open_trainer, write_json
from bench._server import BenchServer
from gradwatch.protocol import BN_FIELDS, PROTOCOL_VERSION, dumps

#: Mirrors of the trainer's pacing constants (trainer_hooks/session.py, transport.py).
READ_EVERY_S = 0.02
READ_EVERY_STEPS = 8
LINGER = 0.03
MAX_BATCH = 64
UPDATE_RATIO_EVERY = 10
#: Distinct record bodies cycled through (values differ, as in training).
VARIANTS = 32
#: Seconds after the last frame before CPU is read: the writer's flush (0.2 s) and alert timer run.
SETTLE = 0.6


@dataclass(frozen=True)
class Shape:
    """A model's reporting shape: ``blocks`` conv/dense layers, each with its BN layer when ``bn``, then a head."""

    name: str
    blocks: int
    bn: int
    rate: float
    layer: str = "conv"
    #: Whether a layer followed by BN keeps its own bias (Dense layers do; MobileNetV2's convolutions do not).
    bias: bool = False

    @property
    def variables(self) -> list[str]:
        """Named like Keras' ``variable.path`` (the rules find kernels and BN gamma/beta by name)."""
        out = []
        for i in range(self.blocks):
            out.append(f"{self.layer}_{i}/kernel")
            if i >= self.bn or self.bias:
                out.append(f"{self.layer}_{i}/bias")
            if i < self.bn:
                out += [f"{self.layer}_{i}_bn/gamma", f"{self.layer}_{i}_bn/beta"]
        return [*out, "predictions/kernel", "predictions/bias"]

    @property
    def bn_layers(self) -> list[str]:
        return [f"{self.layer}_{i}_bn" for i in range(self.bn)]

    @property
    def n_vars(self) -> int:
        return len(self.variables)


SHAPES = {
    "mlp": Shape("mlp", 2, 1, 150.0, layer="dense", bias=True),  # 8 variables
    "mobilenet": Shape("mobilenet", 52, 52, 8.0),  # 158 variables, as MobileNetV2
}


def _f32(values: np.ndarray) -> list[float]:
    """float32 values as Python floats (full repr on the wire), as ``ndarray.tolist()`` gives the callback."""
    return [float(x) for x in np.asarray(values, dtype=np.float32)]


def _bn_rows(rng: np.random.Generator, n_bn: int) -> np.ndarray:
    """Healthy ``BN_FIELDS`` rows: moving mean and variance spread around their means, small positive deltas."""
    mean = rng.normal(0, 0.5, n_bn)
    var = rng.lognormal(0, 0.5, n_bn)
    rows = [
        mean,
        mean - np.abs(rng.normal(1, 0.2, n_bn)),
        mean + np.abs(rng.normal(1, 0.2, n_bn)),
        rng.lognormal(-9, 1, n_bn),
        var,
        var * 0.1,
        var * 5,
        rng.lognormal(-8, 1, n_bn),
    ]
    assert len(rows) == len(BN_FIELDS)
    return np.stack(rows, axis=1)


class Records:
    """Pre-encoded record bodies; ``text(step, t)`` fills in step, epoch and time."""

    HEAD = '{"step":0,"epoch":0,"time":0.0,'

    def __init__(self, shape: Shape, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        level = rng.lognormal(-3, 1, shape.n_vars)  # each variable's usual norm
        bn_level = _bn_rows(rng, shape.bn)
        self.plain: list[str] = []
        self.with_ratio: list[str] = []
        for _ in range(VARIANTS):
            grads = level * rng.lognormal(0, 0.1, shape.n_vars)
            bn = bn_level * rng.lognormal(0, 0.01, bn_level.shape)
            rec: dict[str, Any] = {
                "step": 0,
                "epoch": 0,
                "time": 0.0,
                "loss": _f32(rng.uniform(0.2, 0.7, 1))[0],
                "lr": 0.0010000000474974513,
                "global_norm": _f32(np.sqrt([np.sum(grads**2)]))[0],
                "clip_mode": "global_norm",
                "clip_threshold": None,
                "clip_scale": 1.0,
                "clipped": False,
                "clipped_fraction": None,
                "steps_per_sec": float(shape.rate * rng.uniform(0.95, 1.05)),
                "grad_norm": _f32(grads),
                "grad_nan": [0] * shape.n_vars,
                "grad_inf": [0] * shape.n_vars,
                "weight_nonfinite": 0,
                "loss_nonfinite": False,
                "bn": [_f32(row) for row in bn],
                "update_ratio": None,
                "skipped": False,
            }
            self.plain.append(self._tail(rec))
            rec["update_ratio"] = _f32(rng.lognormal(-7, 0.5, shape.n_vars))
            self.with_ratio.append(self._tail(rec))

    def _tail(self, rec: dict[str, Any]) -> str:
        body = dumps(rec)
        assert body.startswith(self.HEAD), body[:60]
        return body[len(self.HEAD) :]

    def text(self, step: int, t: float) -> str:
        bodies = self.with_ratio if step % UPDATE_RATIO_EVERY == 0 else self.plain
        return f'{{"step":{step},"epoch":{step // 1000},"time":{t!r},{bodies[step % VARIANTS]}'


def schedule(rate: float, n_steps: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """(send offset, [(step, read offset)]) per frame, following the callback's reads and the sender's linger."""
    period = 1.0 / rate
    reads: list[tuple[float, list[int]]] = []
    last_t, last_step, waiting = -math.inf, -READ_EVERY_STEPS, []
    for step in range(n_steps):
        t = (step + 1) * period  # the step ends here
        waiting.append(step)
        if t - last_t >= READ_EVERY_S or step - last_step >= READ_EVERY_STEPS or step == n_steps - 1:
            reads.append((t, waiting))
            last_t, last_step, waiting = t, step, []
    frames: list[tuple[float, list[tuple[int, float]]]] = []
    queue: list[tuple[int, float]] = []
    i = 0
    while i < len(reads) or queue:
        if not queue:
            t, steps = reads[i]
            queue.extend((s, t) for s in steps)
            i += 1
        deadline = queue[0][1] + LINGER
        while i < len(reads) and reads[i][0] <= deadline and len(queue) < MAX_BATCH:
            t, steps = reads[i]
            queue.extend((s, t) for s in steps)
            i += 1
        send_at = deadline if len(queue) < MAX_BATCH else max(queue[-1][1], queue[0][1])
        frames.append((send_at, queue[:MAX_BATCH]))
        queue = queue[MAX_BATCH:]
    return frames


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of the server so far: psutil's user + system (10 ms ticks), and from the scheduler."""

    psutil: float
    #: Sum of the threads' ``/proc/<pid>/task/<tid>/schedstat`` run time (ns resolution; NaN where missing).
    precise: float
    #: The main thread's share of ``precise`` (it runs the event loop).
    loop: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.psutil - other.psutil, self.precise - other.precise, self.loop - other.loop)


class CpuMeter:
    """Reads one process's CPU time. psutil's ticks are too coarse for an idle server (a few ms a second),
    so the scheduler's per-thread nanosecond counters are read as well."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc = psutil.Process(pid)

    def _schedstat(self, tid: int | str) -> float:
        with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9

    def read(self) -> Cpu:
        times = self.proc.cpu_times()
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
            precise = 0.0
            for tid in tids:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
                    precise += self._schedstat(tid)
            loop = self._schedstat(self.pid)
        except OSError:
            precise = loop = math.nan
        return Cpu(times.user + times.system, precise, loop)


async def measure_idle(meter: CpuMeter, seconds: float) -> dict[str, Any]:
    before = meter.read()
    w0 = time.perf_counter()
    await asyncio.sleep(seconds)
    used = meter.read() - before
    wall = time.perf_counter() - w0
    return {
        "seconds": round(wall, 2),
        "cpu_ms_per_s": used.precise / wall * 1e3,
        "psutil_cpu_ms_per_s": used.psutil / wall * 1e3,
        "loop_ms_per_s": used.loop / wall * 1e3,
    }


async def _drain(ws: Any, counts: dict[str, int]) -> None:
    async for text in ws:
        msg = json.loads(text)
        if msg.get("type") == "steps":
            counts["records"] += len(msg["records"])


async def run_shape(
    srv: BenchServer, meter: CpuMeter, shape: Shape, seconds: float, viewer: bool, idle_ms_per_s: float
) -> dict[str, Any]:
    hello = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "run_name": f"bench-cpu-{shape.name}",
        "variables": shape.variables,
        "bn_layers": shape.bn_layers,
        "clip": {"mode": "global_norm", "threshold": None},
        "every": 1,
        "meta": {"model": shape.name},
    }
    records = Records(shape)
    frames = schedule(shape.rate, int(seconds * shape.rate))
    n_records = sum(len(f) for _, f in frames)
    ws = await open_trainer(srv.ws_url, srv.token)
    await ws.send(dumps(hello))
    welcome = json.loads(await ws.recv())
    run_id = int(welcome["run_id"])
    counts = {"records": 0}
    browser, drain = None, None
    if viewer:
        browser = await open_browser(srv.ws_url, srv.token, max_queue=None)
        await browser.send(dumps({"type": "subscribe", "run_id": run_id}))
        drain = asyncio.create_task(_drain(browser, counts))
    await asyncio.sleep(1.0)  # connection set-up is not per-record work
    before = meter.read()
    w0 = time.perf_counter()
    wall0 = time.time()
    late = 0.0
    for send_at, items in frames:
        delay = w0 + send_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        body = ",".join(records.text(step, wall0 + t) for step, t in items)
        await ws.send(f'{{"type":"steps","records":[{body}]}}')
    await asyncio.sleep(SETTLE)
    used = meter.read() - before
    wall = time.perf_counter() - w0
    await ws.close()
    stored, alerts = await _stored(srv, run_id, n_records)
    if browser is not None and drain is not None:
        await browser.close()
        drain.cancel()
    cpu = used.precise
    return {
        "shape": shape.name,
        "variables": shape.n_vars,
        "bn_layers": shape.bn,
        "rate": shape.rate,
        "viewer": viewer,
        "records": n_records,
        "frames": len(frames),
        "records_per_frame": n_records / len(frames),
        "wall_s": round(wall, 2),
        "stored": stored,
        "alerts": alerts,
        "viewer_records": counts["records"] if viewer else None,
        "sender_late_max_ms": late * 1e3,
        "cpu_ms_per_record": cpu / n_records * 1e3,
        "psutil_cpu_ms_per_record": used.psutil / n_records * 1e3,
        "net_cpu_ms_per_record": (cpu - idle_ms_per_s / 1e3 * wall) / n_records * 1e3,
        "loop_ms_per_record": used.loop / n_records * 1e3,
        "other_threads_ms_per_record": (cpu - used.loop) / n_records * 1e3,
        "cpu_percent": cpu / wall * 100,
    }


async def _stored(srv: BenchServer, run_id: int, expected: int) -> tuple[int, int]:
    """Steps the server holds for the run, and its alerts (none: the records are healthy); read after the CPU window."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {srv.token}"}) as client:
        for _ in range(50):
            r = await client.get(f"{srv.url}/api/runs/{run_id}")  # flushes the writer first
            r.raise_for_status()
            run = r.json()
            if run["step"] == expected - 1:
                break
            await asyncio.sleep(0.1)
        alerts = (await client.get(f"{srv.url}/api/runs/{run_id}/alerts")).json()
        return (int(run["step"]) + 1 if run["step"] is not None else 0), len(alerts)


async def bench(shapes: list[Shape], seconds: float, viewer: bool, idle: float, profile: str | None) -> dict[str, Any]:
    with BenchServer(profile=profile) as srv:
        meter = CpuMeter(srv.pid)
        await asyncio.sleep(2.0)  # start-up work (imports, first requests) is over
        idle_before = await measure_idle(meter, idle)
        runs = []
        for shape in shapes:
            runs.append(await run_shape(srv, meter, shape, seconds, viewer, idle_before["cpu_ms_per_s"]))
        idle_after = await measure_idle(meter, idle)
    return {
        "machine": machine(),
        "seconds": seconds,
        "idle_before": idle_before,
        "idle_after": idle_after,
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    ib, ia = result["idle_before"], result["idle_after"]
    lines = [
        f"idle: {ib['cpu_ms_per_s']:.3f} ms CPU per second before the runs (psutil "
        f"{ib['psutil_cpu_ms_per_s']:.1f}), {ia['cpu_ms_per_s']:.3f} after "
        f"(psutil {ia['psutil_cpu_ms_per_s']:.1f})",
        "",
        "| shape | viewer | records | rec/frame | CPU ms/record | psutil | net of idle | event loop "
        "| other threads | server CPU % | stored | alerts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['shape']} ({r['variables']} vars, {r['bn_layers']} BN, {r['rate']:g}/s) | "
            f"{'1' if r['viewer'] else '0'} | {r['records']:,} | {r['records_per_frame']:.1f} | "
            f"{r['cpu_ms_per_record']:.3f} | {r['psutil_cpu_ms_per_record']:.3f} | "
            f"{r['net_cpu_ms_per_record']:.3f} | {r['loop_ms_per_record']:.3f} | "
            f"{r['other_threads_ms_per_record']:.3f} | {r['cpu_percent']:.1f} | {r['stored']:,} | "
            f"{r['alerts']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common_args("python -m bench.server_cpu", __doc__)
    p.add_argument("--shapes", default="mlp,mobilenet", help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--seconds", type=float, default=15.0, help="sending time per shape")
    p.add_argument("--viewer", action="store_true", help="one browser websocket subscribed to the run")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement, before and after")
    p.add_argument("--profile", default=None, help="run the server under cProfile, stats written here")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.idle = 3.0, 2.0
    shapes = [SHAPES[s.strip()] for s in args.shapes.split(",") if s.strip()]
    result = asyncio.run(bench(shapes, args.seconds, args.viewer, args.idle, args.profile))
    result["markdown"] = markdown(result)
    print(result["markdown"])
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
