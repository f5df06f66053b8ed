"""Server scale on one core: many trainers in, many viewers out, stored, with bounded memory.

    python -m bench.server_scale [--quick] [--seconds 60] [--viewers 50] [--json out.json]

The server (``gradwatch serve``, every thread) is pinned to core 0; the load generators
(one process of simulated trainers, one of simulated viewers) are pinned to core 1.
Four trainers send realistic ``steps`` frames (200, 500, 1000 and 2000 variables; the
per-variable part is encoded once, step and time are fresh in every frame) on a 20 ms tick;
the viewers (real ``websockets`` clients with the login cookie and a same-origin Origin)
are spread round-robin over the four runs, so every record is fanned out to about a quarter
of them. Each viewer notes, per frame, now minus the ``time`` of the frame's first (oldest)
record: the fan-out latency, trainer send to viewer receive.

Phases: first a *sustained* phase at the target rate (200,000 variable-samples per second)
while the server's RSS is sampled with psutil every 0.5 s; then a *ramp* of rising
offered rates to find the knee where the server stops keeping up (stored rate < 95 % of
offered, or p99 fan-out latency > 1 s). "Stored" is read back from the server (each run's
last stored step, after the server flushes its writer) one second after every phase, while
the trainers are idle.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import threading
import time
from typing import Any

import httpx
import numpy as np
import psutil

from bench._common import (
    FrameMaker,
    common_args,
    fmt,
    frame_time,
    hello,
    open_browser,
    pcts,
    pin,
    start_trainer,
    write_json,
)
from bench._server import BenchServer

VAR_MIX = (200, 500, 1000, 2000)
TARGET = 200_000  # variable-samples per second
TICK = 0.02  # trainers send a frame every 20 ms (what a Transport does at 50 steps/s)
SERVER_CPU, LOAD_CPU = 0, 1
KEEP_UP_P99_MS = 1000.0  # a phase whose fan-out p99 exceeds this has fallen behind
DRAIN = 1.0  # seconds after a phase before its stored count is read (late frames still count)


# --------------------------------------------------------------------------- trainers (load process)


async def _trainers(ws_url: str, token: str, phases: list[tuple[float, float]], ready: Any, go: Any, out: Any) -> None:
    conns = []
    for i, n in enumerate(VAR_MIX):
        ws, run_id = await start_trainer(ws_url, token, hello(f"scale-{n}", n))
        conns.append((ws, run_id, n, FrameMaker(n, seed=i)))
    ready.put([run_id for _, run_id, _, _ in conns])
    while not go.is_set():
        await asyncio.sleep(0.01)
    total_vars = sum(VAR_MIX)
    next_step = [0] * len(conns)
    sent_log = []

    async def drain(ws: Any) -> None:  # read and drop anything the server sends (commands)
        try:
            async for _ in ws:
                pass
        except Exception:
            pass

    drains = [asyncio.create_task(drain(ws)) for ws, *_ in conns]
    for rate, seconds in phases:
        steps_per_s = rate / total_vars  # every trainer the same step rate
        start = time.monotonic()
        end = start + seconds
        sent = [0] * len(conns)
        tick = 0
        while time.monotonic() < end:
            tick += 1
            due = int(steps_per_s * TICK * tick) - int(steps_per_s * TICK * (tick - 1))
            if due:
                now = time.time()
                for k, (ws, _, _, maker) in enumerate(conns):
                    await ws.send(maker.frame(next_step[k], due, now))
                    next_step[k] += due
                    sent[k] += due
            delay = start + tick * TICK - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elapsed = time.monotonic() - start
        sent_log.append(
            {
                "offered": rate,
                "seconds": elapsed,
                "sent_var_samples": sum(s * n for s, n in zip(sent, VAR_MIX)),
                "last_step": list(next_step),
            }
        )
        out.put(("phase_done", len(sent_log)))
        await asyncio.sleep(DRAIN + 0.5)  # idle: the server drains, the stored count is read meanwhile
    out.put(("trainers", sent_log))
    for ws, *_ in conns:
        await ws.close()
    for t in drains:
        t.cancel()


def trainers_main(ws_url: str, token: str, phases: list[tuple[float, float]], ready: Any, go: Any, out: Any) -> None:
    pin({LOAD_CPU})
    asyncio.run(_trainers(ws_url, token, phases, ready, go, out))


# --------------------------------------------------------------------------- viewers (load process)


async def _viewers(ws_url: str, token: str, run_ids: list[int], n: int, ready: Any, stop: Any, out: Any) -> None:
    samples: list[tuple[float, float]] = []  # (receive time, latency)
    closed: list[int] = []

    async def one(i: int) -> None:
        ws = await open_browser(ws_url, token, max_queue=None)
        run_id = run_ids[i % len(run_ids)]
        await ws.send(f'{{"type":"subscribe","run_id":{run_id}}}')
        try:
            async for raw in ws:
                if isinstance(raw, str) and raw.startswith('{"type":"steps"'):
                    now = time.time()
                    samples.append((now, now - frame_time(raw)))
        except Exception:
            pass
        if ws.close_code not in (None, 1000, 1001, 1012):
            closed.append(int(ws.close_code))

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(1.0)
    ready.put("viewers")
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    arr = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    out.put(("viewers", arr.tobytes(), closed))


def viewers_main(ws_url: str, token: str, run_ids: list[int], n: int, ready: Any, stop: Any, out: Any) -> None:
    pin({LOAD_CPU})
    asyncio.run(_viewers(ws_url, token, run_ids, n, ready, stop, out))


# --------------------------------------------------------------------------- orchestration


def _stored(url: str, token: str, run_ids: list[int]) -> int:
    """Variable-samples stored so far (the server flushes its writer before answering)."""
    runs = httpx.get(url + "/api/runs", headers={"Authorization": f"Bearer {token}"}, timeout=60).json()
    by_id = {r["id"]: r for r in runs}
    total = 0
    for run_id, n in zip(run_ids, VAR_MIX):
        step = by_id.get(run_id, {}).get("step")
        total += 0 if step is None else (step + 1) * n
    return total


def measure(
    seconds: float, ramp: list[float], ramp_seconds: float, n_viewers: int, profile: str | None = None
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    phases = [(float(TARGET), seconds)] + [(r, ramp_seconds) for r in ramp]
    with BenchServer(cpus={SERVER_CPU}, profile=profile) as server:
        ready, out = ctx.Queue(), ctx.Queue()
        go, stop = ctx.Event(), ctx.Event()
        trainers = ctx.Process(target=trainers_main, args=(server.ws_url, server.token, phases, ready, go, out))
        trainers.start()
        run_ids = ready.get(timeout=60)
        viewers = ctx.Process(
            target=viewers_main, args=(server.ws_url, server.token, run_ids, n_viewers, ready, stop, out)
        )
        viewers.start()
        ready.get(timeout=60)
        proc = psutil.Process(server.pid)
        load = [psutil.Process(trainers.pid), psutil.Process(viewers.pid)]
        rss: list[tuple[float, float]] = []
        sampling = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not sampling.is_set():
                rss.append((time.monotonic() - t0, proc.memory_info().rss / 2**20))
                sampling.wait(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        proc.cpu_percent()
        for p in load:
            p.cpu_percent()
        phase_info: list[dict[str, Any]] = []
        stored_before = 0
        go.set()
        t_phase = time.time()
        trainer_log: list[dict[str, Any]] = []
        viewer_data: tuple[bytes, list[int]] | None = None
        deadline = time.monotonic() + sum(s for _, s in phases) + 120
        while len(phase_info) < len(phases) and time.monotonic() < deadline:
            kind, *rest = out.get(timeout=max(1.0, deadline - time.monotonic()))
            if kind == "phase_done":
                t_end = time.time()
                cpu = proc.cpu_percent()
                load_cpu = sum(p.cpu_percent() for p in load)
                time.sleep(DRAIN)
                stored = _stored(server.url, server.token, run_ids)
                phase_info.append(
                    {
                        "t0": t_phase,
                        "t1": t_end,
                        "stored": stored - stored_before,
                        "server_cpu_pct": cpu,
                        "load_cpu_pct": load_cpu,
                    }
                )
                stored_before, t_phase = stored, time.time()
            elif kind == "trainers":
                trainer_log = rest[0]
        while not trainer_log and time.monotonic() < deadline:
            kind, *rest = out.get(timeout=60)
            if kind == "trainers":
                trainer_log = rest[0]
        stop.set()
        while viewer_data is None and time.monotonic() < deadline:
            kind, *rest = out.get(timeout=60)
            if kind == "viewers":
                viewer_data = (rest[0], rest[1])
        sampling.set()
        sampler.join()
        for p in (trainers, viewers):
            p.join(20)
            if p.is_alive():
                p.kill()
                p.join()
        db_bytes = sum(f.stat().st_size for f in server.dir.glob("b.db*"))
    samples = np.frombuffer(viewer_data[0], dtype=np.float64).reshape(-1, 2) if viewer_data else np.zeros((0, 2))
    results = []
    for (offered, _), info, tl in zip(phases, phase_info, trainer_log):
        t0, t1 = info["t0"], info["t1"]
        in_phase = samples[(samples[:, 0] >= t0 + 0.5) & (samples[:, 0] < t1 + DRAIN)]  # skip the first 0.5 s
        dur = tl["seconds"]
        results.append(
            {
                "offered": offered,
                "seconds": round(dur, 2),
                "sent_per_s": tl["sent_var_samples"] / dur,
                "stored_per_s": info["stored"] / dur,
                "fanout_ms": pcts(in_phase[:, 1].tolist()),
                "server_cpu_pct": info["server_cpu_pct"],
                "load_cpu_pct": info["load_cpu_pct"],
            }
        )
    for r in results:
        r["keeps_up"] = bool(
            r["stored_per_s"] >= 0.95 * r["offered"]
            and r["fanout_ms"]["p99"] is not None
            and r["fanout_ms"]["p99"] <= KEEP_UP_P99_MS
        )
    knee = next((r["offered"] for r in results[1:] if not r["keeps_up"]), None)
    best = max((r["stored_per_s"] for r in results if r["keeps_up"]), default=0.0)
    rss_mb = [m for _, m in rss]
    sustained_rss = [m for t, m in rss if t <= seconds]
    half = len(sustained_rss) // 2
    return {
        "variables_per_trainer": list(VAR_MIX),
        "viewers": n_viewers,
        "target_per_s": TARGET,
        "server_cpu": SERVER_CPU,
        "load_cpu": LOAD_CPU,
        "sustained": results[0],
        "ramp": results[1:],
        "knee_offered_per_s": knee,
        "highest_kept_up_per_s": best,
        "viewer_closes": viewer_data[1] if viewer_data else [],
        "rss_mb": {
            "start": rss_mb[0] if rss_mb else None,
            "max": max(rss_mb) if rss_mb else None,
            "sustained_first_half_max": max(sustained_rss[:half]) if half else None,
            "sustained_second_half_max": max(sustained_rss[half:]) if half else None,
            "end": rss_mb[-1] if rss_mb else None,
            "samples": len(rss_mb),
            "series": [[round(t, 1), round(m, 1)] for t, m in rss[::4]],
        },
        "db_bytes": db_bytes,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Trainers: {len(r['variables_per_trainer'])} ({', '.join(map(str, r['variables_per_trainer']))} variables), "
        f"viewers: {r['viewers']} (spread over the runs); server on core {r['server_cpu']}, load on core "
        f"{r['load_cpu']}.",
        "",
        "| phase | offered (var-samples/s) | sent /s | stored /s | fan-out p50 (ms) | p95 (ms) | p99 (ms) "
        "| server CPU % | load CPU % | keeps up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in [("sustained", r["sustained"])] + [("ramp", x) for x in r["ramp"]]:
        f = x["fanout_ms"]
        lines.append(
            f"| {name} {x['seconds']:.0f} s | {x['offered']:,.0f} | {x['sent_per_s']:,.0f} "
            f"| {x['stored_per_s']:,.0f} | {fmt(f['p50'])} | {fmt(f['p95'])} | {fmt(f['p99'])} "
            f"| {x['server_cpu_pct']:.0f} | {x['load_cpu_pct']:.0f} | {'yes' if x['keeps_up'] else 'no'} |"
        )
    m = r["rss_mb"]
    knee = r["knee_offered_per_s"]
    lines += [
        "",
        f"Knee: {'not reached' if knee is None else f'{knee:,.0f} var-samples/s offered'}; highest rate kept up: "
        f"{r['highest_kept_up_per_s']:,.0f} var-samples/s. Server RSS (MiB): start {fmt(m['start'])}, "
        f"sustained phase first-half max {fmt(m['sustained_first_half_max'])}, second-half max "
        f"{fmt(m['sustained_second_half_max'])}, overall max {fmt(m['max'])}, end {fmt(m['end'])}. "
        f"Viewers closed as too slow: {len(r['viewer_closes'])}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.server_scale", __doc__)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the sustained phase")
    p.add_argument("--ramp-seconds", type=float, default=8.0)
    p.add_argument(
        "--ramp",
        default="100000,200000,300000,400000,600000,800000",
        help="offered rates (variable-samples/s) of the ramp",
    )
    p.add_argument("--viewers", type=int, default=50)
    p.add_argument("--profile", default=None, help="run the server under cProfile and write its stats here")
    args = p.parse_args(argv)
    if args.quick:
        seconds, ramp, ramp_seconds = 5.0, [300_000.0, 600_000.0], 3.0
    else:
        seconds, ramp, ramp_seconds = args.seconds, [float(x) for x in args.ramp.split(",")], args.ramp_seconds
    result = measure(seconds, ramp, ramp_seconds, args.viewers, args.profile)
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
