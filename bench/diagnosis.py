"""Diagnosis benchmark: do the alerts name what went wrong, early, and stay quiet on healthy runs?

    python -m bench.diagnosis [--quick] [--seed 2026] [--only KIND,...] [--json PATH]
    python -m bench.diagnosis --lead [--quick] [--seed 2026] [--seeds 2] [--json PATH]   (bench/lead_time.py)

Trains the zoo (``bench.zoo``: pathological and healthy runs drawn at random from a seeded RNG) for real,
each run with a default ``GradientMonitor(run_name=...)``, against one real ``gradwatch serve``, then reads
every run's alerts and metrics from the server's REST API and scores them per kind: recall, precision,
the confusion matrix, the median lead time, and false alarms per 1,000 healthy steps.

Lead time: steps from the first alert naming the run's true kind (or a kind that honestly accompanies it,
``zoo.ALSO``, not counting ``nonfinite``) to the run's event: its first non-finite step that the loss
scaler did not skip, else the first step whose loss exceeds 10x its early median.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from bench._common import common_args, machine, write_json
from bench._server import BenchServer
from gradwatch.protocol import ACTION_SEVERITIES, ALERT_KINDS, decode_float

from .zoo import ALSO, KINDS, Run, draw_zoo, execute, quick_zoo

LOUD = ACTION_SEVERITIES
#: Alert kinds that warn of a pathology before it shows (no zoo run has them as its true kind).
LEADING = tuple(k for k in ALERT_KINDS if k not in KINDS)
#: A run's event comes this many steps after the start or later: its alert must come before it.
EARLY_EVENT = 3
#: An explosion is gradual when its global norm climbed (stayed 3x above its level before the onset)
#: for this many steps or more before its event: the case where an early warning is possible.
GRADUAL = 20


def _f(x: Any) -> float:
    return math.nan if x is None else decode_float(x)


def event_of(metrics: dict[str, Any]) -> tuple[int | None, str | None]:
    """The first non-finite step the scaler did not skip, else the first loss above 10x its early median."""
    steps = metrics["step"]
    nonfinite_cols = list(metrics.get("nonfinite", {}).values())
    for i, step in enumerate(steps):
        if metrics["skipped"][i]:
            continue
        bad = (
            not math.isfinite(_f(metrics["global_norm"][i]))
            or metrics["loss_nonfinite"][i]
            or metrics["weight_nonfinite"][i] > 0
            or any(c[i] for c in nonfinite_cols)
        )
        if bad:
            return int(step), "nonfinite"
    losses = [_f(v) for v in metrics["loss"]]
    early = [v for v in losses[:10] if math.isfinite(v)]
    if early:
        ref = 10 * statistics.median(early)
        for step, v in zip(steps, losses, strict=True):
            if math.isfinite(v) and v > ref:
                return int(step), "loss_10x"
    return None, None


def norm_rise(metrics: dict[str, Any]) -> float:
    """The largest finite global norm over the median of the first ten."""
    norms = [v for v in (_f(g) for g in metrics["global_norm"]) if math.isfinite(v)]
    if len(norms) < 2:
        return 0.0
    early = statistics.median(norms[:10])
    return max(norms) / early if early > 0 else 0.0


def climb(metrics: dict[str, Any], onset: int | None, event: int | None) -> int | None:
    """Steps before the event during which the global norm (5-step running median) stayed 3x its level before."""
    if event is None:
        return None
    steps = metrics["step"]
    norms = [_f(g) for g in metrics["global_norm"]]
    before = [v for st, v in zip(steps, norms, strict=True) if math.isfinite(v) and st < (onset or 10)][:200]
    if not before:
        return None
    level = 3 * statistics.median(before)
    start = None
    for i, st in enumerate(steps):
        if st >= event:
            break
        window = [v for v in norms[max(0, i - 4) : i + 1] if math.isfinite(v)]
        up = bool(window) and statistics.median(window) >= level
        start = (start if start is not None else st) if up else None
    return event - start if start is not None else 0


def run_one(run: Run, srv: BenchServer, api: httpx.Client) -> dict[str, Any]:
    t0 = time.monotonic()
    out: dict[str, Any] = {
        "name": run.name,
        "kind": run.kind,
        "recipe": run.recipe,
        "arch": run.model.arch,
        "opt": run.opt,
        "api": run.train.api,
        "lr": run.lr,
        "batch": run.train.batch,
        "onset": run.schedule.get("onset", run.inject.get("step")),
        "spec": run.describe(),
    }
    try:
        out.update(execute(run, srv.url, srv.token))
    except Exception as err:  # a run that fails to train is reported, not fatal to the benchmark
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-2000:]
    out["seconds"] = round(time.monotonic() - t0, 1)
    rows = [r for r in api.get("/api/runs").json() if r["name"] == run.name]
    if not rows:
        out.setdefault("error", "the run never reached the server")
        out["alerts"], out["steps_reported"], out["event_step"], out["event"] = [], 0, None, None
        return out
    run_id = max(r["id"] for r in rows)
    # The finished status follows the run's last steps on its socket: once the server shows it, the
    # alerts have seen every step (a loaded machine may take a while to get there).
    deadline = time.monotonic() + 30
    while api.get(f"/api/runs/{run_id}").json()["status"] not in ("finished", "interrupted", "disconnected"):
        if time.monotonic() > deadline:
            out.setdefault("error", "the run did not reach the finished status within 30 s")
            break
        time.sleep(0.05)
    alerts = api.get(f"/api/runs/{run_id}/alerts").json()
    metrics = api.get(f"/api/runs/{run_id}/metrics", params={"max_points": 1_000_000}).json()
    out["run_id"] = run_id
    out["steps_reported"] = len(metrics["step"])
    out["event_step"], out["event"] = event_of(metrics)
    out["norm_rise"] = norm_rise(metrics)
    out["climb"] = climb(metrics, out["onset"], out["event_step"])
    out["alerts"] = [
        {k: a[k] for k in ("kind", "severity", "step", "last_step", "layer", "count", "message")} for a in alerts
    ]
    return out


# --------------------------------------------------------------------------- scoring


def provoked(r: dict[str, Any]) -> bool:
    """Did the pathology really happen (the ones the benchmark can check from outside)?"""
    if r.get("error"):
        return False
    if r["kind"] == "dead_relu":
        return float(r.get("dead_share", 0.0)) >= 0.9
    if r["kind"] == "nonfinite":
        return r["event"] == "nonfinite"
    if r["kind"] == "exploding_gradients":  # it diverged, or at least its gradient norm rose 100x
        return r["event_step"] is not None or r.get("norm_rise", 0.0) >= 100
    return True


def _first(r: dict[str, Any], kinds: set[str]) -> int | None:
    steps = [a["step"] for a in r["alerts"] if a["kind"] in kinds and a["severity"] in LOUD and not premature(r, a)]
    return min(steps) if steps else None


def premature(r: dict[str, Any], alert: dict[str, Any]) -> bool:
    """An alert of a run's own kind raised before its pathology began (a run with a known onset step)."""
    onset = r.get("onset")
    return alert["kind"] in {r["kind"], *ALSO.get(r["kind"], ())} and onset is not None and alert["step"] < onset


def loud_kinds(r: dict[str, Any]) -> set[str]:
    """Kinds raised at warning or critical (an alert raised before the pathology began does not count)."""
    return {a["kind"] for a in r["alerts"] if a["severity"] in LOUD and not premature(r, a)}


def acceptable(r: dict[str, Any], kind: str) -> bool:
    """May run ``r`` raise ``kind``? Its own kind, a kind that accompanies it, or anything after its event."""
    if r["kind"] == "healthy":
        return False
    if kind == r["kind"] or kind in ALSO[r["kind"]]:
        return True
    first = _first(r, {kind})
    return r["event_step"] is not None and first is not None and first > r["event_step"]


def lead(r: dict[str, Any]) -> int | None:
    if r["event_step"] is None:
        return None
    kinds = {r["kind"]} if r["kind"] == "nonfinite" else {r["kind"], *ALSO[r["kind"]]} - {"nonfinite"}
    first = _first(r, kinds)
    return None if first is None else r["event_step"] - first


def score(results: list[dict[str, Any]]) -> dict[str, Any]:
    counted = [r for r in results if r["kind"] == "healthy" or provoked(r)]
    columns = [*KINDS, *LEADING, "none"]
    confusion = {k: dict.fromkeys(columns, 0) for k in (*KINDS, "healthy")}
    for r in counted:
        raised = loud_kinds(r)
        for k in raised:
            confusion[r["kind"]][k] += 1
        if not raised:
            confusion[r["kind"]]["none"] += 1
    per_kind: dict[str, Any] = {}
    misses: list[str] = []
    for kind in KINDS:
        mine = [r for r in counted if r["kind"] == kind]
        hit = [r for r in mine if kind in loud_kinds(r)]
        raising = [r for r in counted if kind in loud_kinds(r)]
        right = [r for r in raising if acceptable(r, kind)]
        leads = [x for x in (lead(r) for r in mine) if x is not None]
        gradual = [lead(r) for r in mine if kind == "exploding_gradients" and (r.get("climb") or 0) >= GRADUAL]
        late = [
            r["name"]
            for r in mine
            if kind != "nonfinite"
            and r["event_step"] is not None
            and r["event_step"] >= EARLY_EVENT
            and (lead(r) is None or (lead(r) or 0) <= 0)
        ]
        per_kind[kind] = {
            "runs": len(mine),
            "not_provoked": sum(1 for r in results if r["kind"] == kind and not provoked(r)),
            "recall": len(hit) / len(mine) if mine else None,
            "precision": len(right) / len(raising) if raising else None,
            "median_lead": statistics.median(leads) if leads else None,
            "leads": leads,
            "median_lead_gradual": statistics.median([g for g in gradual if g is not None])
            if any(g is not None for g in gradual)
            else None,
            "gradual_runs": len(gradual),
            "late_or_missing": late,
        }
        misses += [f"{r['name']}: not named {kind}" for r in mine if r not in hit]
        misses += [
            f"{r['name']}: alert not before its event at step {r['event_step']}" for r in mine if r["name"] in late
        ]
        misses += [f"{r['name']}: raised {kind} wrongly" for r in raising if r not in right and r["kind"] != "healthy"]
    early = [(r, a) for r in counted for a in r["alerts"] if a["severity"] in LOUD and premature(r, a)]
    misses += [
        f"{r['name']}: {a['kind']} raised at step {a['step']}, before its onset at step {r['onset']}: {a['message']}"
        for r, a in early
    ]
    healthy = [r for r in counted if r["kind"] == "healthy"]
    h_steps = sum(r["steps_reported"] for r in healthy)
    loud = [(r["name"], a) for r in healthy for a in r["alerts"] if a["severity"] in LOUD]
    info = [(r["name"], a) for r in healthy for a in r["alerts"] if a["severity"] not in LOUD]
    misses += [f"{n}: false {a['severity']} {a['kind']} at step {a['step']}: {a['message']}" for n, a in loud]
    gradual_leads = per_kind["exploding_gradients"]["median_lead_gradual"]
    targets = {
        "every_pathological_run_named_right": all(per_kind[k]["recall"] in (None, 1.0) for k in KINDS),
        "alert_before_event_when_event_at_step_3_or_later": all(not per_kind[k]["late_or_missing"] for k in KINDS),
        "median_lead_gradual_explosions_at_least_10": gradual_leads is not None and gradual_leads >= 10,
        "no_warning_or_critical_on_healthy_runs": not loud,
        "no_alert_before_the_onset": not early,
    }
    return {
        "per_kind": per_kind,
        "confusion": confusion,
        "targets": targets,
        "misses": misses,
        "premature_alerts": len(early),
        "healthy": {
            "runs": len(healthy),
            "steps": h_steps,
            "loud_alerts": len(loud),
            "info_alerts": len(info),
            "false_alarms_per_1000_steps": 1000 * sum(a["count"] for _, a in loud) / h_steps if h_steps else None,
        },
        "errors": [f"{r['name']}: {r['error']}" for r in results if r.get("error")],
    }


# --------------------------------------------------------------------------- report


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def markdown(s: dict[str, Any], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "| kind | runs | recall | precision | median lead (steps) | missed or late |",
        "|---|---|---|---|---|---|",
    ]
    for kind, k in s["per_kind"].items():
        lead_txt = "n/a" if k["median_lead"] is None else f"{k['median_lead']:g}"
        if kind == "exploding_gradients" and k["median_lead_gradual"] is not None:
            lead_txt += f" (gradual: {k['median_lead_gradual']:g} over {k['gradual_runs']})"
        missed = round((1 - (k["recall"] or 0)) * k["runs"]) + len(k["late_or_missing"])
        lines.append(f"| {kind} | {k['runs']} | {_p(k['recall'])} | {_p(k['precision'])} | {lead_txt} | {missed} |")
    h = s["healthy"]
    fa = h["false_alarms_per_1000_steps"]
    lines += [
        "",
        f"Healthy: {h['runs']} runs, {h['steps']:,} steps, {h['loud_alerts']} warning/critical alerts "
        f"({'n/a' if fa is None else f'{fa:.2f}'} per 1,000 steps), {h['info_alerts']} info.",
        "",
        "Confusion (rows: true kind; columns: kinds raised at warning/critical; a run may raise several):",
        "",
        "| true \\ raised | " + " | ".join(s["confusion"]["healthy"]) + " |",
        "|---" * (len(s["confusion"]["healthy"]) + 1) + "|",
    ]
    for true, row in s["confusion"].items():
        lines.append(f"| {true} | " + " | ".join(str(v) for v in row.values()) + " |")
    lines += ["", "Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in s["targets"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = common_args("python -m bench.diagnosis", __doc__)
    p.add_argument("--seed", type=int, default=2026, help="the zoo's RNG seed")
    p.add_argument("--only", default=None, help="comma-separated true kinds (and/or 'healthy') to run")
    p.add_argument("--limit", type=int, default=None, help="at most this many runs (after --only)")
    p.add_argument("--lead", action="store_true", help="the lead-time benchmark instead (bench/lead_time.py)")
    p.add_argument("--seeds", type=int, default=2, help="--lead: seeds per architecture x optimizer")
    p.add_argument("--healthy", type=int, default=3, help="--lead: healthy runs per schedule")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.lead:
        from .lead_time import main as lead_main

        return lead_main(args)
    runs = quick_zoo() if args.quick else draw_zoo(args.seed)
    if args.only:
        wanted = set(args.only.split(","))
        runs = [r for r in runs if r.kind in wanted]
    runs = runs[: args.limit] if args.limit else runs
    t0 = time.monotonic()
    results = []
    with (
        BenchServer() as srv,
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as api,
    ):
        for run in runs:
            r = run_one(run, srv, api)
            results.append(r)
            loud = sorted(loud_kinds(r))
            print(
                f"{r['name']:<60} {r['seconds']:>5}s event={r['event_step']} alerts={loud}"
                + (f" ERROR {r['error']}" if r.get("error") else ""),
                flush=True,
            )
    s = score(results)
    command = "python -m bench.diagnosis" + (" --quick" if args.quick else f" --seed {args.seed}")
    if args.only:
        command += f" --only {args.only}"
    report = {
        "command": command,
        "machine": machine(),
        "seconds": round(time.monotonic() - t0, 1),
        "db": str(srv.db),
        "summary": s,
        "runs": results,
    }
    print(markdown(s, command))
    for m in s["misses"]:
        print("MISS", m)
    if args.json:
        write_json(args.json, report)
    elif not args.quick and not args.only and not args.limit:
        out = Path("bench/results/diagnosis.json")
        out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
