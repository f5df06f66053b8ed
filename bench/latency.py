"""Live latency: from the end of a training step to the record arriving at a browser websocket.

    python -m bench.latency [--quick] [--rate 50] [--vars 200] [--seconds 30] [--json out.json]

A simulated trainer process drives the real ``trainer_hooks.transport.Transport`` (so its
batching and sender thread are included) at ``--rate`` steps per second, each record stamped
with ``time.time()`` at the end of its step (as ``RunSession`` does). A browser-like client in
this process (the ``websockets`` client with the login cookie and a same-origin ``Origin``)
subscribes to the run and compares each record's ``time`` with its arrival time; both run on
this machine, so the clocks are the same. The first second is warm-up and not counted.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import sys
import threading
import time
from typing import Any

from bench._common import common_args, fmt, grad_values, open_browser, pcts, record, variables, write_json
from bench._server import BenchServer

RUN_NAME = "bench-latency"
WARMUP = 1.0


def trainer_process(ws_url: str, token: str, rate: float, n_vars: int, seconds: float, name: str) -> None:
    """Pace ``rate`` steps/s for ``seconds``, handing each record to a real Transport."""
    from gradwatch.protocol import PROTOCOL_VERSION, ClipSetting, TrainerHello
    from trainer_hooks.transport import Transport

    names = variables(n_vars)

    def make_hello(run_id: int | None) -> TrainerHello:
        return TrainerHello(
            type="hello",
            protocol=PROTOCOL_VERSION,
            run_name=name,
            run_id=run_id,
            variables=names,
            clip=ClipSetting(mode="global_norm", threshold=None),
            every=1,
        )

    transport = Transport(
        ws_url + "/ws/trainer", token, hello=make_hello, on_command=lambda m: None, encode=lambda p: p
    )
    transport.start()
    transport.connected.wait(10)
    grads = grad_values(n_vars)
    period = 1.0 / rate
    start = time.perf_counter()
    steps = int(seconds * rate)
    for step in range(steps):
        target = start + (step + 1) * period  # the simulated step "computes" until here
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        rec = record(step, time.time(), grads)
        transport.put_record(step, rec, 24 * n_vars)
    transport.close(5.0)


async def watch(ws_url: str, token: str, deadline: float, name: str) -> dict[str, Any]:
    ws = await open_browser(ws_url, token, max_queue=None)
    latencies: list[float] = []
    frames = 0
    run_id = None
    t0 = None
    try:
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            now = time.time()
            msg = json.loads(raw)
            kind = msg.get("type")
            if run_id is None and kind == "run" and msg["run"]["name"] == name:
                run_id = msg["run"]["id"]
                await ws.send(json.dumps({"type": "subscribe", "run_id": run_id}))
            elif kind == "steps" and msg["run_id"] == run_id:
                if t0 is None:
                    t0 = now
                if now - t0 < WARMUP:
                    continue
                frames += 1
                latencies.extend(now - r["time"] for r in msg["records"])
                if msg["records"][-1]["step"] >= STOP_STEP[0]:
                    break
    finally:
        await ws.close()
    return {"latencies": latencies, "frames": frames}


STOP_STEP = [0]


def measure(rate: float, n_vars: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with BenchServer() as server:
        STOP_STEP[0] = int(seconds * rate) - 1
        result: dict[str, Any] = {}

        def browse() -> None:
            result.update(asyncio.run(watch(server.ws_url, server.token, time.monotonic() + seconds + 30, RUN_NAME)))

        viewer = threading.Thread(target=browse)
        viewer.start()
        time.sleep(0.5)  # the viewer is connected before the run appears
        proc = ctx.Process(target=trainer_process, args=(server.ws_url, server.token, rate, n_vars, seconds, RUN_NAME))
        proc.start()
        proc.join(seconds + 60)
        if proc.is_alive():
            proc.kill()
            proc.join()
        viewer.join(60)
    lat = result.get("latencies", [])
    records = len(lat)
    return {
        "rate_steps_per_s": rate,
        "variables": n_vars,
        "seconds": seconds,
        "records_measured": records,
        "frames": result.get("frames", 0),
        "records_per_frame": records / max(1, result.get("frames", 0)),
        "latency_ms": pcts(lat),
        "target_p95_ms": 100.0,
    }


def markdown(r: dict[str, Any]) -> str:
    ms = r["latency_ms"]
    return "\n".join(
        [
            "| steps/s | variables | records | records/frame | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) "
            "| target p95 |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {r['rate_steps_per_s']:g} | {r['variables']} | {r['records_measured']} | {r['records_per_frame']:.2f} "
            f"| {fmt(ms['p50'])} | {fmt(ms['p95'])} | {fmt(ms['p99'])} | {fmt(ms['max'])} | ≤ 100 ms |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.latency", __doc__)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--vars", type=int, default=200)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    seconds = 4.0 if args.quick else args.seconds
    result = measure(args.rate, args.vars, seconds)
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
