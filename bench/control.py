"""Control latency: from ``POST /api/runs/{id}/commands`` to the trainer's acknowledgement at the server.

    python -m bench.control [--quick] [--mode fit|transport] [--rate 50] [--commands 60] [--json out.json]

``--mode fit`` (default): a child process trains a small Keras MLP with a real
``GradientMonitor`` in ``model.fit``, paced to ``--rate`` steps per second by a callback
that sleeps out the rest of each step. ``--mode transport`` (used by ``--quick``, no
TensorFlow): a paced loop drives the real ``Transport`` + ``RunControl`` exactly as
``RunSession`` does (commands applied at the step boundary). This process posts
``set_clip`` commands (alternating thresholds, a random 0-100 ms apart) and watches a
browser websocket subscribed to the run for the ``command`` update whose state is no
longer ``pending``; latency = that arrival minus the moment the POST was sent. The
target is one step plus 50 ms at p95.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import time
from typing import Any

import httpx

from bench._common import common_args, fmt, grad_values, open_browser, pcts, record, variables, write_json
from bench._server import BenchServer

RUN_NAME = "bench-control"


def fit_process(url: str, token: str, rate: float, seconds: float) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from gradwatch import GradientMonitor

    class Pace(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.next = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.next += 1.0 / rate
            delay = self.next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                self.next = time.perf_counter()

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    steps = int(rate * seconds)
    x, y = rng.random((steps * 16, 32), np.float32), rng.integers(0, 10, steps * 16)
    monitor = GradientMonitor(server=url, token=token, run_name=RUN_NAME)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor, Pace()])


def transport_process(url: str, token: str, rate: float, seconds: float) -> None:
    from gradwatch.protocol import PROTOCOL_VERSION, ClipSetting, TrainerHello
    from trainer_hooks.control import RunControl
    from trainer_hooks.transport import Transport

    names = variables(200)

    def make_hello(run_id: int | None) -> TrainerHello:
        return TrainerHello(
            type="hello",
            protocol=PROTOCOL_VERSION,
            run_name=RUN_NAME,
            run_id=run_id,
            variables=names,
            clip=ClipSetting(mode="global_norm", threshold=None),
            every=1,
        )

    control: RunControl | None = None
    transport = Transport(
        url.replace("http", "ws", 1) + "/ws/trainer",
        token,
        hello=make_hello,
        on_command=lambda m: control.submit(m) if control else None,
        encode=lambda p: p,
    )
    control = RunControl(on_clip=lambda mode, threshold, group: None, send=transport.put_control)
    transport.start()
    grads = grad_values(200)
    start = time.perf_counter()
    for step in range(int(rate * seconds)):
        delay = start + (step + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        transport.put_record(step, record(step, time.time(), grads), 4800)
        control.wait_while_paused(step + 1)
        if control.stop_requested:
            break
    control.finish()
    transport.close(5.0)


async def drive(server: BenchServer, n_commands: int, deadline: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.token}"}
    ws = await open_browser(server.ws_url, server.token, max_queue=None)
    latencies: list[float] = []
    states: dict[str, int] = {}
    run_id = None
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
            while run_id is None and time.monotonic() < deadline:
                msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
                if msg["type"] == "run" and msg["run"]["name"] == RUN_NAME:
                    run_id = msg["run"]["id"]
            if run_id is None:
                raise RuntimeError("the trainer never connected")
            await ws.send(json.dumps({"type": "subscribe", "run_id": run_id}))
            await asyncio.sleep(1.0)  # warm-up: the trainer is stepping
            for i in range(n_commands):
                if time.monotonic() > deadline:
                    break
                body = {"type": "set_clip", "threshold": 1.0 + (i % 2)}
                t0 = time.perf_counter()
                resp = await http.post(f"/api/runs/{run_id}/commands", json=body)
                resp.raise_for_status()
                cid = resp.json()["id"]
                while time.monotonic() < deadline:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
                    if (
                        msg["type"] == "command"
                        and msg["command"]["id"] == cid
                        and msg["command"]["state"] != "pending"
                    ):
                        latencies.append(time.perf_counter() - t0)
                        states[msg["command"]["state"]] = states.get(msg["command"]["state"], 0) + 1
                        break
                await asyncio.sleep(random.uniform(0.0, 0.1))
            await http.post(f"/api/runs/{run_id}/commands", json={"type": "stop"})
    finally:
        await ws.close()
    return {"latencies": latencies, "states": states}


def measure(mode: str, rate: float, n_commands: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    seconds = 30 + n_commands * 0.25  # long enough; the run is stopped from here when done
    random.seed(0)
    with BenchServer() as server:
        target = ctx.Process(
            target=fit_process if mode == "fit" else transport_process, args=(server.url, server.token, rate, seconds)
        )
        target.start()
        try:
            result = asyncio.run(drive(server, n_commands, time.monotonic() + seconds + 60))
        finally:
            target.join(30)
            if target.is_alive():
                target.kill()
                target.join()
    step_ms = 1e3 / rate
    return {
        "mode": mode,
        "rate_steps_per_s": rate,
        "step_ms": step_ms,
        "commands": len(result["latencies"]),
        "states": result["states"],
        "latency_ms": pcts(result["latencies"]),
        "target_p95_ms": step_ms + 50,
    }


def markdown(r: dict[str, Any]) -> str:
    ms = r["latency_ms"]
    return "\n".join(
        [
            "| trainer | steps/s | commands | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | target p95 |",
            "|---|---|---|---|---|---|---|---|",
            f"| {'model.fit + GradientMonitor' if r['mode'] == 'fit' else 'Transport + RunControl'} "
            f"| {r['rate_steps_per_s']:g} | {r['commands']} | {fmt(ms['p50'])} | {fmt(ms['p95'])} | {fmt(ms['p99'])} "
            f"| {fmt(ms['max'])} | ≤ {r['target_p95_ms']:.0f} ms |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.control", __doc__)
    p.add_argument("--mode", choices=["fit", "transport"], default="fit")
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--commands", type=int, default=60)
    args = p.parse_args(argv)
    mode, n = ("transport", 10) if args.quick else (args.mode, args.commands)
    result = measure(mode, args.rate, n)
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
