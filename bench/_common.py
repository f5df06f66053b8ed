"""Helpers shared by the benchmarks: statistics, machine facts, protocol messages, websocket clients."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from gradwatch.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, dumps


def pcts(values: Sequence[float], scale: float = 1e3) -> dict[str, float | int | None]:
    """p50/p95/p99/max (times ``scale``, default seconds -> ms) and the sample count."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64) * scale
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": len(values), "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def fmt(x: float | int | None, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def variables(n: int) -> list[str]:
    return [f"block_{i // 4}/layer_{i % 4}/kernel" for i in range(n)]


def hello(name: str, n_vars: int, every: int = 1) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "run_name": name,
        "variables": variables(n_vars),
        "bn_layers": [],
        "clip": {"mode": "global_norm", "threshold": None},
        "every": every,
        "meta": {},
    }


def grad_values(n_vars: int, seed: int = 0) -> list[float]:
    """Gradient norms as a trainer sends them: float32 values printed with full float64 repr."""
    rng = np.random.default_rng(seed)
    return [float(x) for x in rng.lognormal(-3, 1, n_vars).astype(np.float32)]


def record(step: int, t: float, grads: list[float]) -> dict[str, Any]:
    """One realistic ``StepRecord`` (what ``trainer_hooks.session`` encodes), stamped with ``t``."""
    n = len(grads)
    return {
        "step": step,
        "epoch": step // 1000,
        "time": t,
        "loss": 0.6931471805599453,
        "lr": 0.0010000000474974513,
        "global_norm": 1.2345678806304932,
        "clip_mode": "global_norm",
        "clip_threshold": None,
        "clip_scale": 1.0,
        "clipped": False,
        "clipped_fraction": None,
        "steps_per_sec": 50.12345,
        "grad_norm": grads,
        "grad_nan": [0] * n,
        "grad_inf": [0] * n,
        "weight_nonfinite": 0,
        "loss_nonfinite": False,
        "bn": [],
        "update_ratio": None,
        "skipped": False,
    }


class FrameMaker:
    """Fast ``steps`` frames for load generation: the per-variable part is encoded once."""

    def __init__(self, n_vars: int, seed: int = 0) -> None:
        rec = record(0, 0.0, grad_values(n_vars, seed))
        body = dumps(rec)
        head = '{"step":0,"epoch":0,"time":0.0,'
        assert body.startswith(head), body[:60]
        self.tail = body[len(head) :]

    def record_text(self, step: int, t: float) -> str:
        return f'{{"step":{step},"epoch":{step // 1000},"time":{t!r},{self.tail}'

    def frame(self, first_step: int, count: int, t: float) -> str:
        recs = ",".join(self.record_text(first_step + i, t) for i in range(count))
        return f'{{"type":"steps","records":[{recs}]}}'


def frame_time(text: str) -> float:
    """The ``time`` of the first record in a ``steps`` message, without parsing the whole frame."""
    i = text.index('"time":') + 7
    j = text.index(",", i)
    return float(text[i:j])


async def open_trainer(ws_url: str, token: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(
        ws_url + "/ws/trainer",
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=MAX_FRAME_BYTES,
        compression=None,
        open_timeout=10,
        proxy=None,
    )


async def open_browser(ws_url: str, token: str, max_queue: int | None = 256) -> Any:
    """A browser-like socket: the login cookie and a same-origin ``Origin`` header."""
    from websockets.asyncio.client import connect

    origin = "http" + ws_url[2:]
    return await connect(
        ws_url + "/ws/browser",
        additional_headers={"Cookie": f"gradwatch_token={token}"},
        origin=origin,
        compression=None,
        open_timeout=10,
        max_size=MAX_FRAME_BYTES,
        max_queue=max_queue,
        proxy=None,
    )


async def start_trainer(ws_url: str, token: str, msg: dict[str, Any]) -> tuple[Any, int]:
    ws = await open_trainer(ws_url, token)
    await ws.send(dumps(msg))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws, int(welcome["run_id"])


def common_args(prog: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (CI)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def write_json(path: str | None, result: Any) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


def pin(cpus: set[int]) -> None:
    """Pin this process to ``cpus`` (ignored where the core does not exist)."""
    avail = os.sched_getaffinity(0)
    want = cpus & avail
    if want:
        os.sched_setaffinity(0, want)
