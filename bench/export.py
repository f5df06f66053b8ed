"""Export speed and server memory: a 100,000-step x 200-variable run as Parquet and CSV.

    python -m bench.export [--quick] [--steps 100000] [--vars 200] [--json out.json]

A database is filled through the server's own ``Store`` with realistic records (the
``StepRecord`` a trainer sends: 200 gradient norms drawn from 64 log-normal vectors, one BN-free
MLP-like run, every 50th step with update ratios), then served by a real ``gradwatch serve``.
The client streams ``GET /api/runs/{id}/export`` to disk with httpx; meanwhile the server's
RSS is sampled with psutil every 20 ms. Reported: wall time until the last byte, file size,
the server's RSS before the request and its peak during it. The file is then read back with
pyarrow / pandas and its shape checked.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench._common import common_args, grad_values, hello, machine, record, write_json
from bench._server import BenchServer
from gradwatch.protocol import StepRecord, TrainerHello


def fill(db: Path, steps: int, n_vars: int) -> tuple[int, float]:
    from gradwatch.server.store import Store

    t0 = time.perf_counter()
    store = Store(db)
    try:
        run = store.create_run(TrainerHello.model_validate(hello("export-bench", n_vars)))
        vectors = [grad_values(n_vars, seed) for seed in range(64)]
        ratios = [float(x) for x in np.linspace(1e-4, 1e-2, n_vars)]
        batch: list[StepRecord] = []
        for s in range(steps):
            rec = record(s, 1.7e9 + s * 0.02, vectors[s % 64])
            rec["loss"] = 2.0 / (1 + s * 1e-3)
            if s % 50 == 0:
                rec["update_ratio"] = ratios
            batch.append(StepRecord.model_validate(rec))
            if len(batch) == 2000:
                store.insert_steps([(run.id, batch)])
                batch = []
        if batch:
            store.insert_steps([(run.id, batch)])
        return run.id, time.perf_counter() - t0
    finally:
        store.close()


def anon_rss(pid: int) -> int:
    """The process's anonymous resident memory (heap), without the SQLite file pages it maps."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def export_once(srv: BenchServer, run_id: int, fmt: str, out: Path) -> dict[str, Any]:
    proc = psutil.Process(srv.pid)
    base, base_anon = proc.memory_info().rss, anon_rss(srv.pid)
    peak, peak_anon = [base], [base_anon]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
                peak_anon[0] = max(peak_anon[0], anon_rss(srv.pid))
            except (psutil.Error, OSError):
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    first = None
    with (
        httpx.stream(
            "GET",
            f"{srv.url}/api/runs/{run_id}/export",
            params={"format": fmt},
            headers={"Authorization": f"Bearer {srv.token}"},
            timeout=300,
        ) as r,
        out.open("wb") as f,
    ):
        r.raise_for_status()
        for chunk in r.iter_bytes(1 << 20):
            if first is None:
                first = time.perf_counter() - t0
            f.write(chunk)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    return {
        "format": fmt,
        "seconds": seconds,
        "first_byte_s": first,
        "bytes": out.stat().st_size,
        "server_rss_before_mb": base / 2**20,
        "server_rss_peak_mb": peak[0] / 2**20,
        "server_rss_growth_mb": (peak[0] - base) / 2**20,
        "server_heap_before_mb": base_anon / 2**20,
        "server_heap_peak_mb": peak_anon[0] / 2**20,
    }


def _scalar_columns() -> int:
    """Export columns of a run without BN layers: one per scalar step field (gradwatch/stepfields.py) ..."""
    from gradwatch.stepfields import STEP_FIELDS

    return len({f.stored_as for f in STEP_FIELDS if f.shape == "scalar"})


def _variable_columns() -> int:
    """... and one per variable for each per-variable column (NaN and Inf counts share one)."""
    from gradwatch.stepfields import STEP_FIELDS

    return len({f.stored_as for f in STEP_FIELDS if f.shape == "variable"})


def check(path: Path, fmt: str, steps: int, n_vars: int) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    if fmt == "parquet":
        meta = pq.ParquetFile(path).metadata
        rows, cols = meta.num_rows, meta.num_columns
    else:
        df = pd.read_csv(path, usecols=["step", "loss"])
        rows, cols = len(df), len(pd.read_csv(path, nrows=1).columns)
    want_cols = _scalar_columns() + _variable_columns() * n_vars
    if rows != steps or cols != want_cols:
        raise SystemExit(f"{fmt}: {rows} rows x {cols} columns, expected {steps} x {want_cols}")


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.export", __doc__)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--vars", type=int, default=200)
    args = p.parse_args(argv)
    steps = 5_000 if args.quick else args.steps
    work = Path(tempfile.mkdtemp(prefix="gradwatch-export-bench-"))
    try:
        return _run(args, steps, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a 100 MB database per run


def _run(args: Any, steps: int, work: Path) -> int:
    db = work / "export.db"
    run_id, fill_s = fill(db, steps, args.vars)
    print(
        f"filled {steps:,} steps x {args.vars} variables in {fill_s:.1f} s "
        f"({db.stat().st_size / 2**20:.0f} MB database)",
        file=sys.stderr,
    )
    results = []
    with BenchServer(db=db) as srv:
        for fmt in ("parquet", "csv"):
            out = work / f"run.{fmt}"
            res = export_once(srv, run_id, fmt, out)
            check(out, fmt, steps, args.vars)
            results.append(res)
            print(
                f"{fmt:8s} {res['seconds']:6.2f} s  {res['bytes'] / 2**20:7.1f} MB  server RSS "
                f"{res['server_rss_before_mb']:.0f} -> peak {res['server_rss_peak_mb']:.0f} MB "
                f"(+{res['server_rss_growth_mb']:.0f}); heap {res['server_heap_before_mb']:.0f} -> peak "
                f"{res['server_heap_peak_mb']:.0f} MB",
                file=sys.stderr,
            )
            out.unlink()
    db_mb = db.stat().st_size / 2**20
    columns = _scalar_columns() + _variable_columns() * args.vars
    print(f"{steps:,} steps x {args.vars} variables ({columns} columns), {db_mb:.0f} MB database\n")
    print("| format | seconds | first byte (s) | file (MB) | server RSS before -> peak (MiB) | heap before -> peak |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['format']} | {r['seconds']:.2f} | {r['first_byte_s']:.2f} | {r['bytes'] / 2**20:.1f} | "
            f"{r['server_rss_before_mb']:.0f} -> {r['server_rss_peak_mb']:.0f} | "
            f"{r['server_heap_before_mb']:.0f} -> {r['server_heap_peak_mb']:.0f} |"
        )
    write_json(
        args.json,
        {
            "steps": steps,
            "variables": args.vars,
            "db_mb": db_mb,
            "fill_s": fill_s,
            "exports": results,
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
