"""The monitored run read back through the REST API and compared with the plain run's reference."""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import numpy as np
from reference import LossLog

from gradwatch.protocol import decode_float

#: Per-variable norms are stored as float32 by the server, and both sides compute in float32.
NORM_RTOL = 1e-5


class Api:
    """The few REST reads the checks need (``with Api(server) as api:`` closes its connection)."""

    def __init__(self, server: Any) -> None:
        self.client = httpx.Client(base_url=server.url, headers=server.headers, timeout=10)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str) -> Any:
        r = self.client.get(path)
        r.raise_for_status()
        return r.json()

    def runs_named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.get("/api/runs") if r["name"] == name]

    def finished_run(self, name: str, last_step: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The runs of that name once the newest is finished at ``last_step`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        runs = self.runs_named(name)
        while time.monotonic() < deadline:
            if runs and runs[0]["status"] == "finished" and runs[0]["step"] == last_step:
                break
            time.sleep(0.1)
            runs = self.runs_named(name)
        return runs


def compare_state(plain: dict[str, np.ndarray], watched: dict[str, np.ndarray], rtol: float) -> list[str]:
    problems = []
    if sorted(plain) != sorted(watched):
        problems.append(
            f"state variables differ: only plain {sorted(set(plain) - set(watched))}, "
            f"only monitored {sorted(set(watched) - set(plain))}"
        )
    for name in sorted(set(plain) & set(watched)):
        a, b = plain[name], watched[name]
        if rtol == 0.0:
            same = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        else:
            same = a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True)
        if not same:
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.shape == b.shape else "shape"
            problems.append(f"{name}: differs (max abs diff {diff})")
    return problems


def _close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=NORM_RTOL, abs_tol=1e-12)


def check_run(api: Api, name: str, ref: dict[int, dict[str, float]], losses: LossLog | None) -> list[str]:
    """The problems of one monitored run against its reference (empty: all good)."""
    steps = sorted(ref)
    assert steps == list(range(steps[0], steps[0] + len(steps))), f"the plain run's steps have holes: {steps}"
    runs = api.finished_run(name, steps[-1])
    if len(runs) != 1:
        return [
            f"{len(runs)} runs named {name} (one monitor is one run): "
            f"{[(r['id'], r['status'], r['step']) for r in runs]}"
        ]
    run = runs[0]
    detail = api.get(f"/api/runs/{run['id']}")
    m = api.get(f"/api/runs/{run['id']}/metrics")
    problems = []
    if run["status"] != "finished":
        problems.append(f"run status {run['status']} at step {run['step']} (finished at {steps[-1]} expected)")
    if m["step"] != steps:
        problems.append(f"steps reported {_span(m['step'])} != steps trained {_span(steps)}; gaps {m['gaps']}")
    updated = sorted({p for row in ref.values() for p in row})
    if sorted(detail["variables"]) != updated:
        problems.append(f"variables reported {sorted(detail['variables'])} != updated {updated}")
    bad_norms = []
    for i, step in enumerate(m["step"]):
        want = ref.get(step)
        if want is None:
            continue
        reported = {p: decode_float(s[i]) for p, s in m["grad_norm"].items() if s[i] is not None}
        if sorted(reported) != sorted(want):
            bad_norms.append(f"step {step}: norms of {sorted(reported)} reported, {sorted(want)} updated")
            continue
        for path, value in want.items():
            if not _close(reported[path], value):
                bad_norms.append(f"step {step} {path}: reported {reported[path]:.7g}, reference {value:.7g}")
        global_ref = math.sqrt(sum(v * v for v in want.values()))
        got = decode_float(m["global_norm"][i]) if m["global_norm"][i] is not None else math.nan
        if not _close(got, global_ref):
            bad_norms.append(f"step {step} global norm: reported {got:.7g}, reference {global_ref:.7g}")
    if bad_norms:
        problems.append(f"{len(bad_norms)} norms differ; first: {bad_norms[:4]}")
    if losses is not None:
        got = [decode_float(v) if v is not None else math.nan for v in m["loss"]]
        wrong = [
            (s, g, round(losses.own[s - steps[0]], 5), round(losses.means[s - steps[0]], 5))
            for s, g in zip(m["step"], got)
            if not losses.matches(s - steps[0], g)
        ]
        if wrong:
            problems.append(
                f"the loss of {len(wrong)} steps is neither the step's own nor Keras' running mean "
                f"(step, reported, own, mean): {wrong[:4]}"
            )
    alerts = [a for a in api.get(f"/api/runs/{run['id']}/alerts") if a["severity"] in ("warning", "critical")]
    if alerts:
        shown = [(a["kind"], a["severity"], a["step"], a["message"]) for a in alerts]
        problems.append(f"alerts on a healthy run: {shown}")
    return problems


def _span(steps: list[int]) -> str:
    return f"{len(steps)} steps [{steps[0]}..{steps[-1]}]" if steps else "no steps"
