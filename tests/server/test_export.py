"""``GET /api/runs/{id}/export`` and ``gradwatch export``: a real server, real records, read back with pandas."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from simtrainer import VARS, hello, record, run, send_steps, start_trainer

BN = ["bn1"]
N = 700  # more than one export page is not needed for the values; the page size is tested below


def records() -> list[dict[str, Any]]:
    recs = [record(s, n_bn=1, bn=[[float(s)] * 8] if s % 5 == 0 else []) for s in range(N)]
    recs[3] = record(
        3,
        n_bn=1,
        loss="NaN",
        lr=None,
        global_norm="Infinity",
        grad_norm=[1.0, "NaN", 2.0],
        grad_nan=[0, 4, 0],
        grad_inf=[1, 0, 0],
        loss_nonfinite=True,
        skipped=True,
        update_ratio=[1e-3, "NaN", 2e-3],
        clip_mode="value",
        clip_threshold=0.5,
        clipped=True,
        clipped_fraction=0.25,
    )
    return recs


@pytest.fixture(scope="module")
def exported_run(shared_server: Any) -> int:
    async def body() -> int:
        ws, run_id = await start_trainer(
            shared_server.trainer_url, shared_server.token, hello("export me", bn_layers=BN)
        )
        recs = records()
        for i in range(0, N, 100):
            await send_steps(ws, recs[i : i + 100])
        await ws.close()
        return run_id

    return run(body())


def fetch(srv: Any, run_id: int, fmt: str, **kw: Any) -> httpx.Response:
    return httpx.get(f"{srv.url}/api/runs/{run_id}/export", params={"format": fmt}, timeout=30, **kw)


def check_frame(df: pd.DataFrame, *, csv: bool) -> None:
    assert len(df) == N and df["step"].tolist() == list(range(N))
    head = [
        "step",
        "epoch",
        "time",
        "loss",
        "lr",
        "global_norm",
        "clip_mode",
        "clip_threshold",
        "clip_scale",
        "clipped",
        "clipped_fraction",
        "steps_per_sec",
    ]
    assert list(df.columns[: len(head)]) == head
    per_var = [f"{stat}:{v}" for stat in ("grad_norm", "nonfinite", "update_ratio") for v in VARS]
    assert [c for c in df.columns if ":" in c and not c.startswith("bn:")] == per_var
    assert len([c for c in df.columns if c.startswith("bn:bn1:")]) == 8
    ok = df.iloc[10]
    assert ok["loss"] == pytest.approx(1 / 11) and ok["global_norm"] == 10.5 and ok["epoch"] == 0
    assert ok["grad_norm:dense/bias"] == pytest.approx(11.0) and ok["nonfinite:out/kernel"] == 0
    assert ok["bn:bn1:moving_mean_mean"] == 10.0 and ok["clip_mode"] == "global_norm"
    assert math.isnan(df.iloc[11]["bn:bn1:moving_mean_mean"])  # no BN sample at that step
    assert math.isnan(ok["update_ratio:dense/kernel"]) and math.isnan(ok["clip_threshold"])
    bad = df.iloc[3]
    assert math.isnan(bad["loss"]) and bad["global_norm"] == math.inf and math.isnan(bad["grad_norm:dense/bias"])
    assert (bad["nonfinite:dense/kernel"], bad["nonfinite:dense/bias"]) == (1, 4)
    assert bool(bad["skipped"]) and bool(bad["loss_nonfinite"]) and bool(bad["clipped"])
    assert bad["clip_mode"] == "value" and bad["clip_threshold"] == 0.5 and bad["clipped_fraction"] == 0.25
    assert bad["update_ratio:out/kernel"] == pytest.approx(2e-3) and math.isnan(bad["update_ratio:dense/bias"])
    if not csv:  # Parquet keeps "not reported" (null) apart from NaN
        assert pd.isna(bad["lr"]) and bad["lr"] is not np.nan and df["lr"].isna().sum() == 1


def test_parquet_round_trip(shared_server: Any, exported_run: int) -> None:
    r = fetch(shared_server, exported_run, "parquet", headers=shared_server.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert f"run{exported_run}-export_me.parquet" in r.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column("lr").null_count == 1 and table.column("loss").null_count == 0  # NaN is not null
    assert str(table.schema.field("grad_norm:dense/kernel").type) == "float"
    check_frame(table.to_pandas(), csv=False)


def test_csv_round_trip(shared_server: Any, exported_run: int) -> None:
    r = fetch(shared_server, exported_run, "csv", headers=shared_server.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    check_frame(pd.read_csv(io.StringIO(r.text)), csv=True)


def test_small_pages_give_the_same_file(shared_server: Any, exported_run: int, monkeypatch: Any) -> None:
    from gradwatch.server import export
    from gradwatch.server.store import Store

    whole = pq.read_table(
        io.BytesIO(fetch(shared_server, exported_run, "parquet", headers=shared_server.headers).content)
    )
    store = Store(shared_server.db)
    try:
        rec = store.get_run(exported_run)
        assert rec is not None
        # A budget of 3 rows' cells: pages are bounded by cells, however few rows that leaves (no floor)
        monkeypatch.setattr(export, "PAGE_CELLS", 3 * export.width(rec))
        pages: list[int] = []
        read_page = store.read_step_page

        def spy(*args: Any) -> Any:
            page = read_page(*args)
            pages.append(len(page))
            return page

        monkeypatch.setattr(store, "read_step_page", spy)

        async def collect() -> bytes:
            return b"".join([chunk async for chunk in export.stream(store, rec, "parquet")])

        paged = pq.ParquetFile(io.BytesIO(run(collect())))
    finally:
        store.close()
    assert paged.metadata.num_row_groups == math.ceil(N / 3) and max(pages) == 3
    again = paged.read()
    assert again.schema.equals(whole.schema)
    assert [c.null_count for c in again.columns] == [c.null_count for c in whole.columns]
    pd.testing.assert_frame_equal(again.to_pandas(), whole.to_pandas())  # NaN == NaN here


def test_refusals(shared_server: Any, exported_run: int) -> None:
    assert fetch(shared_server, exported_run, "parquet").status_code == 401
    assert (
        fetch(shared_server, exported_run, "parquet", headers={"Authorization": "Bearer wrong-token"}).status_code
        == 401
    )
    bad = fetch(shared_server, exported_run, "xlsx", headers=shared_server.headers)
    assert bad.status_code == 422 and "format" in bad.json()["detail"] and "'xlsx'" in bad.json()["detail"]
    assert "'parquet' or 'csv'" in bad.json()["detail"]
    missing = fetch(shared_server, 10**9, "csv", headers=shared_server.headers)
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]


def cli(srv: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "export", *args, "--server", srv.url],
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_writes_the_same_file(shared_server: Any, exported_run: int, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "run.csv"
    done = cli(shared_server, str(exported_run), "--format", "csv", "-o", str(out))
    assert done.returncode == 0, done.stderr
    api = fetch(shared_server, exported_run, "csv", headers=shared_server.headers).text
    assert out.read_text() == api
    check_frame(pd.read_csv(out), csv=True)
    parquet = tmp_path / "run.parquet"
    assert cli(shared_server, str(exported_run), "-o", str(parquet)).returncode == 0
    check_frame(pd.read_parquet(parquet), csv=False)


def test_cli_errors_name_the_problem(shared_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "none.csv"
    missing = cli(shared_server, "999999", "--format", "csv", "-o", str(out))
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr and "does not exist" in missing.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial file left behind
    env = {**shared_server.env, "GRADWATCH_TOKEN": "not-the-token"}
    denied = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "export", "1", "--server", shared_server.url, "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 2 and "HTTP 401" in denied.stderr
