"""The page's download links and a loss curve that stays readable when the loss explodes (real Chromium)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from simtrainer import hello, record, run, send_steps, start_trainer

from .test_dashboard import login

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
STEPS = 200


def feed(srv: Any, records: list[dict[str, Any]], run_id: int | None = None) -> int:
    async def body() -> int:
        ws, rid = await start_trainer(srv.trainer_url, srv.token, hello("explodes", run_id=run_id, bn_layers=["bn1"]))
        await send_steps(ws, records)
        await ws.close()
        return rid

    return run(body())


def bn_row(mean: float) -> list[list[float]]:
    """One BN layer's row (BN_FIELDS): moving mean ``mean``, moving variance 1."""
    return [[mean, mean, mean, 0.0, 1.0, 1.0, 1.0, 0.0]]


def loss_axis(page: Any, chart: str = "chart-loss-lr") -> dict[str, Any]:
    return page.evaluate(
        """(id) => { const d = document.getElementById(id); const y = d._fullLayout.yaxis;
                   return {type: y.type, range: y.range.slice(), title: y.title.text, points: d.data[0].y.length}; }""",
        chart,
    )


def bulk_share(axis: dict[str, Any], lo: float, hi: float) -> float:
    """The share of the axis height that values in [lo, hi] take."""
    f = math.log10 if axis["type"] == "log" else (lambda x: x)
    a, b = axis["range"]
    return (f(hi) - f(lo)) / (b - a)


def test_loss_explosion_switches_to_a_readable_axis_and_the_run_downloads(
    gradwatch_server: Any, browser_page: Any, tmp_path: Path
) -> None:
    srv = gradwatch_server()
    # loss 2.0 -> 1.0; BN moving mean around 0, both signs
    healthy = [record(s, loss=2.0 - s * 0.005, bn=bn_row(math.sin(s))) for s in range(STEPS)]
    run_id = feed(srv, healthy)
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 3000})  # every chart in view: the page updates only those
    login(page, srv)
    page.goto(f"{srv.url}/#run={run_id}")
    page.wait_for_function(f"() => document.getElementById('chart-loss-lr').data?.[0]?.y.length === {STEPS}")
    before = loss_axis(page)
    assert before["type"] == "linear" and bulk_share(before, 1.0, 2.0) > 0.5

    bn_before = loss_axis(page, "chart-bn")
    assert bn_before["type"] == "linear" and bulk_share(bn_before, -1.0, 1.0) > 0.5

    feed(srv, [record(STEPS, loss=4e22, bn=bn_row(-3e9))], run_id=run_id)  # live, through the socket
    page.wait_for_function(f"() => document.getElementById('chart-loss-lr').data[0].y.length === {STEPS + 1}")
    page.wait_for_function("() => document.getElementById('chart-loss-lr')._fullLayout.yaxis.type === 'log'")
    after = loss_axis(page)
    # a linear autorange would leave the 1..2 curve ~1e-22 of the height: a flat line on the floor
    assert bulk_share(after, 1.0, 2.0) > 1e-2 and after["range"][1] >= 22.6 and after["title"] == "loss (log)"
    # mixed signs: no log axis; the range follows the bulk and the -3e9 runs off the bottom
    page.wait_for_function("() => document.getElementById('chart-bn')._fullLayout.yaxis.autorange === false")
    bn_after = loss_axis(page, "chart-bn")
    assert bn_after["type"] == "linear" and bulk_share(bn_after, -1.0, 1.0) > 0.5
    assert bn_after["title"] == "moving mean (outliers off scale)"

    with page.expect_download() as info:
        page.get_by_test_id("export-parquet").click()
    download = info.value
    assert download.suggested_filename == f"gradwatch-run{run_id}-explodes.parquet"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    df = pd.read_parquet(path)
    assert df["step"].tolist() == list(range(STEPS + 1)) and df["loss"].iloc[-1] == 4e22
    assert df["loss"].iloc[0] == 2.0 and "grad_norm:dense/kernel" in df.columns
    with page.expect_download() as info:
        page.get_by_test_id("export-csv").click()
    csv = tmp_path / "run.csv"
    info.value.save_as(csv)
    assert pd.read_csv(csv)["loss"].iloc[-1] == 4e22
    assert not page.gradwatch_problems, page.gradwatch_problems
