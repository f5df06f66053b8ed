"""Long runs: a stored run of 100,000 steps x 200 variables, its first metrics request and page load.

    python -m bench.long_run [--quick] [--steps 100000] [--vars 200] [--json out.json]

The run is written through the server's own ``Store`` (``create_run`` + ``insert_steps``,
the batched writer's call; 1,000 steps a transaction). Then a real ``gradwatch serve``
opens that database and we time (1) the dashboard's first ``GET /api/runs/{id}/metrics?
max_points=2000&omit_empty=true`` (what the page asks for; the first request of a fresh server process,
then the median of 3 more), and (2) with Playwright driving Chromium (the launch flags of
tests/client/conftest.py), navigation to ``/#run=ID`` until ``window.gradwatch.steps > 0``
(the charts hold data). Also reported: database bytes per variable-sample.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._common import common_args, fmt, hello, write_json
from bench._server import BenchServer

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The page's first metrics request (client/run-sync.js).
PAGE_QUERY = {"max_points": 2000, "omit_empty": "true"}


def generate(db: Path, steps: int, n_vars: int) -> tuple[int, float]:
    from gradwatch.protocol import StepRecord, TrainerHello
    from server.store import Store

    store = Store(db)
    run = store.create_run(TrainerHello.model_validate(hello("long-run", n_vars)))
    rng = np.random.default_rng(0)
    base = rng.lognormal(-3, 1, n_vars)
    zeros = [0] * n_vars
    t0 = time.perf_counter()
    chunk = 1000
    for lo in range(0, steps, chunk):
        noise = rng.lognormal(0, 0.2, (min(chunk, steps - lo), n_vars)) * base
        batch = []
        for i, row in enumerate(noise.astype(np.float32).tolist()):
            step = lo + i
            batch.append(
                StepRecord.model_construct(
                    step=step,
                    epoch=step // 1000,
                    time=1.7e9 + step * 0.02,
                    loss=1.0 / (1 + step * 1e-3),
                    lr=0.001,
                    global_norm=float(np.sqrt(np.sum(np.square(row)))),
                    clip_mode="global_norm",
                    clip_threshold=None,
                    clip_scale=1.0,
                    clipped=False,
                    clipped_fraction=None,
                    steps_per_sec=50.0,
                    grad_norm=row,
                    grad_nan=zeros,
                    grad_inf=zeros,
                    weight_nonfinite=0,
                    loss_nonfinite=False,
                    bn=[],
                    update_ratio=None,
                    skipped=False,
                )
            )
        store.insert_steps([(run.id, batch)])
    elapsed = time.perf_counter() - t0
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return run.id, elapsed


def page_load(url: str, token: str, run_id: int, timeout_s: float = 60.0) -> float | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    exe = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)
    if exe is None:
        return None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            # bypass_csp: Playwright evaluates string predicates with eval, which the page's CSP forbids
            page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
            page.goto(f"{url}/login?token={token}")  # sets the cookie (not timed)
            page.goto("about:blank")
            t0 = time.perf_counter()
            page.goto(f"{url}/#run={run_id}")
            page.wait_for_function("window.gradwatch && window.gradwatch.steps > 0", timeout=timeout_s * 1000)
            return time.perf_counter() - t0
        finally:
            browser.close()


def measure(steps: int, n_vars: int) -> dict[str, Any]:
    db = Path(tempfile.mkdtemp(prefix="gradwatch-bench-long-")) / "long.db"
    run_id, gen_s = generate(db, steps, n_vars)
    db_bytes = sum(f.stat().st_size for f in db.parent.glob("long.db*"))
    with BenchServer(db=db) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        times = []
        size = 0
        for _ in range(4):
            t0 = time.perf_counter()
            r = httpx.get(f"{server.url}/api/runs/{run_id}/metrics", params=PAGE_QUERY, headers=headers, timeout=120)
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            size = len(r.content)
        page_s = page_load(server.url, server.token, run_id)
    return {
        "steps": steps,
        "variables": n_vars,
        "generate_s": gen_s,
        "metrics_first_ms": 1e3 * times[0],
        "metrics_repeat_median_ms": 1e3 * statistics.median(times[1:]),
        "metrics_bytes": size,
        "page_interactive_ms": None if page_s is None else 1e3 * page_s,
        "db_bytes": db_bytes,
        "db_bytes_per_var_sample": db_bytes / (steps * n_vars),
        "target_metrics_ms": 1000,
        "target_page_ms": 2000,
    }


def markdown(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| steps x variables | first metrics (max_points=2000) | repeat (median) | response | page interactive "
            "| DB bytes / var-sample | targets |",
            "|---|---|---|---|---|---|---|",
            f"| {r['steps']:,} x {r['variables']} | {fmt(r['metrics_first_ms'], 0)} ms "
            f"| {fmt(r['metrics_repeat_median_ms'], 0)} ms | {r['metrics_bytes'] / 1e6:.2f} MB "
            f"| {fmt(r['page_interactive_ms'], 0)} ms | {r['db_bytes_per_var_sample']:.2f} | ≤ 1000 ms, ≤ 2000 ms |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.long_run", __doc__)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--vars", type=int, default=200)
    args = p.parse_args(argv)
    steps = 10_000 if args.quick else args.steps
    result = measure(steps, args.vars)
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
