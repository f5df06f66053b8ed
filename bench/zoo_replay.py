"""Replay a diagnosis benchmark's stored runs through the current alert rules, without training again.

    python -m bench.zoo_replay REPORT.json [--only KIND,...] [--show NAME-SUBSTRING]

``bench.diagnosis`` keeps the server's database and names it in its report (``db``). This serves that
database, reads every run's series back from the REST API, rebuilds the step records the trainer sent
and feeds them, in frames of 8, through a fresh ``RunAlerts`` of the rules in this tree; then scores the
replayed alerts exactly as the benchmark does. For tuning the rules in seconds; the figures in
docs/alerts.md come from ``bench.diagnosis`` itself, with real trainers and a real server.
(Non-finite origins, which the trainer sends as separate messages, are not replayed.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from gradwatch.server.alerts.engine import RunAlerts
from gradwatch.server.alerts.rules import RunInfo

from bench._server import BenchServer
from gradwatch.protocol import BN_FIELDS, StepRecord

from .diagnosis import climb, loud_kinds, markdown, norm_rise, score

BN_SERIES = {"moving_mean_mean": "moving_mean", "moving_variance_mean": "moving_variance"}


def records(detail: dict[str, Any], m: dict[str, Any]) -> list[StepRecord]:
    variables, bn_layers = detail["variables"], detail["bn_layers"]
    out = []
    for i, step in enumerate(m["step"]):
        bn = []
        if bn_layers and m["bn"]:
            rows = [[m["bn"][layer][BN_SERIES.get(f, f)][i] for f in BN_FIELDS] for layer in bn_layers]
            bn = rows if all(v is not None for row in rows for v in row) else []
        counts = [m["nonfinite"].get(v, [0] * len(m["step"]))[i] for v in variables]
        out.append(
            StepRecord.model_validate(
                {
                    "step": step,
                    "epoch": m["epoch"][i],
                    "time": m["time"][i],
                    "loss": m["loss"][i],
                    "lr": m["lr"][i],
                    "global_norm": m["global_norm"][i] if m["global_norm"][i] is not None else "NaN",
                    "clip_mode": detail.get("clip_mode", "global_norm") if m["clip_threshold"][i] else "global_norm",
                    "clip_threshold": m["clip_threshold"][i],
                    "clip_scale": m["clip_scale"][i] or 1.0,
                    "clipped": m["clipped"][i],
                    "clipped_fraction": m["clipped_fraction"][i],
                    "grad_norm": [
                        m["grad_norm"][v][i] if m["grad_norm"][v][i] is not None else "NaN" for v in variables
                    ],
                    "grad_nan": counts,
                    "grad_inf": [0] * len(variables),
                    "weight_nonfinite": m["weight_nonfinite"][i],
                    "loss_nonfinite": m["loss_nonfinite"][i],
                    "bn": bn,
                    "skipped": m["skipped"][i],
                }
            )
        )
    return out


def replay(detail: dict[str, Any], m: dict[str, Any]) -> list[dict[str, Any]]:
    info = RunInfo(
        detail["variables"], detail["bn_layers"], detail.get("relu_layers", []), bool(detail.get("guard_nonfinite"))
    )
    engine = RunAlerts(detail["id"], info)
    recs = records(detail, m)
    raised: dict[int, Any] = {}  # every episode, resolved ones included
    for i in range(0, len(recs), 8):
        for c in engine.observe_steps(recs[i : i + 8]):
            raised[id(c.alert)] = c.alert
    return [
        {k: getattr(a, k) for k in ("kind", "severity", "step", "last_step", "layer", "count", "message")}
        for a in raised.values()
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo_replay", description=__doc__.splitlines()[0])
    p.add_argument("report")
    p.add_argument("--only", default=None)
    p.add_argument("--show", default=None, help="print the replayed alerts of runs whose name contains this")
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    results = [r for r in report["runs"] if not args.only or r["kind"] in args.only.split(",")]
    with (
        BenchServer(db=Path(report["db"])) as srv,
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as api,
    ):
        for r in results:
            if "run_id" not in r:
                continue
            detail = api.get(f"/api/runs/{r['run_id']}").json()
            m = api.get(f"/api/runs/{r['run_id']}/metrics", params={"max_points": 1_000_000}).json()
            r["alerts"] = replay(detail, m)
            r["norm_rise"] = norm_rise(m)
            r["climb"] = climb(m, r["onset"], r["event_step"])
            if args.show and args.show in r["name"]:
                for a in r["alerts"]:
                    print("   ", a["severity"], a["kind"], a["step"], a["layer"], a["message"])
            firsts = {k: min(a["step"] for a in r["alerts"] if a["kind"] == k) for k in sorted(loud_kinds(r))}
            print(f"{r['name']:<60} onset={r['onset']} event={r['event_step']} climb={r['climb']} alerts={firsts}")
    s = score(results)
    print(markdown(s, f"python -m bench.zoo_replay {args.report}"))
    for miss in s["misses"]:
        print("MISS", miss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
