"""Turns stored step columns into the ``/api/runs/{id}/metrics`` JSON body."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydantic_core

from gradwatch.protocol import BN_FIELDS

from .downsample import BoolArray, FloatArray, bucket_starts, minmax, minmax_int, positions
from .stepcodec import FLOAT_COLUMNS, StepColumns
from .store import GapRow, RunRow

#: Metrics key for each ``BN_FIELDS`` column (the two means drop their suffix).
_RENAMED = {"moving_mean_mean": "moving_mean", "moving_variance_mean": "moving_variance"}
BN_KEYS: tuple[str, ...] = tuple(_RENAMED.get(f, f) for f in BN_FIELDS)


def _floats(values: FloatArray, missing: BoolArray) -> list[Any]:
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(missing).tolist():
        out[i] = None
    return out


def _columns(values: FloatArray, missing: BoolArray) -> list[list[Any]]:
    """2-D (n, k) floats -> k lists, ``None`` on missing rows."""
    cols: list[list[Any]] = values.T.tolist()
    rows = np.flatnonzero(missing).tolist()
    for col in cols:
        for i in rows:
            col[i] = None
    return cols


Probe = tuple[int, dict[str, float], dict[str, float]]


def _layers(declared: list[str], seen: list[dict[str, float]]) -> list[str]:
    """Declared layers first (hello order), then any other key probes reported, in order of appearance."""
    out = dict.fromkeys(declared)
    for values in seen:
        out.update(dict.fromkeys(values))
    return list(out)


def probe_series(run: RunRow, probes: list[Probe]) -> dict[str, Any]:
    """``{step: [...], dead_relu: {layer: [...]}, bn_gap: {layer: [...]}}``; ``None`` where a probe lacked a layer."""
    dead_layers = _layers(run.relu_layers, [p[1] for p in probes])
    gap_layers = _layers(run.bn_layers if any(p[2] for p in probes) else [], [p[2] for p in probes])
    return {
        "step": [p[0] for p in probes],
        "dead_relu": {layer: [p[1].get(layer) for p in probes] for layer in dead_layers},
        "bn_gap": {layer: [p[2].get(layer) for p in probes] for layer in gap_layers},
    }


def build_metrics(run: RunRow, data: StepColumns, gaps: list[GapRow], max_points: int | None,
                  probes: list[Probe] | None = None, *, omit_empty: bool = False) -> str:
    """The metrics body as JSON text (NaN/Inf spelt the wire way).

    ``omit_empty`` leaves out the ``nonfinite`` series of variables whose counts are all
    zero and ``update_ratio`` when no returned step measured it: in a healthy run they
    are half of a large response (the page asks for this; absent means zero / null).
    """
    n = len(data)
    starts = bucket_starts(n, max_points) if max_points is not None else None
    body: dict[str, Any] = {"run_id": run.id}

    if starts is None:
        idx = np.arange(n)

        def f(v: FloatArray, m: BoolArray) -> tuple[FloatArray, BoolArray]:
            return v, m

        def i(v: Any) -> Any:
            return v
    else:
        idx = positions(starts, n)
        s = starts

        def f(v: FloatArray, m: BoolArray) -> tuple[FloatArray, BoolArray]:
            return minmax(v, s, m)

        def i(v: Any) -> Any:
            return minmax_int(v, s)

    body["step"] = data.step[idx].tolist()
    body["epoch"] = data.ints["epoch"][idx].tolist()
    body["time"] = data.time[idx].tolist()
    for name in FLOAT_COLUMNS:
        v, m = f(data.floats[name], data.missing[name])
        body[name] = _floats(v, m)
    body["clipped"] = i(data.ints["clipped"]).astype(bool).tolist()
    body["weight_nonfinite"] = i(data.ints["weight_nonfinite"]).tolist()
    body["loss_nonfinite"] = i(data.ints["loss_nonfinite"]).astype(bool).tolist()

    no_missing = np.zeros(n, dtype=bool)
    g, gm = f(data.grad_norm, no_missing)  # type: ignore[arg-type]  # float32 kept on purpose
    body["grad_norm"] = dict(zip(run.variables, _columns(g, gm), strict=True))
    if data.nonfinite.any():
        nf = i(data.nonfinite)
        keep = nf.any(axis=0) if omit_empty else np.ones(len(run.variables), dtype=bool)
        body["nonfinite"] = {v: col.tolist() for v, col, k in zip(run.variables, nf.T, keep, strict=True) if k}
    else:  # the usual case: all zero
        body["nonfinite"] = {} if omit_empty else {v: [0] * len(idx) for v in run.variables}
    bn: dict[str, dict[str, list[Any]]] = {}
    if run.bn_layers:
        width = len(BN_FIELDS)
        flat = data.bn.reshape(n, len(run.bn_layers) * width)
        b, bm = f(flat, data.bn_missing)
        cols = _columns(b, bm)
        for li, layer in enumerate(run.bn_layers):
            bn[layer] = {BN_KEYS[k]: cols[li * width + k] for k in range(width)}
    body["bn"] = bn
    if data.update_ratio_missing.all():  # nothing measured: skip downsampling an all-missing matrix
        body["update_ratio"] = {} if omit_empty else {v: [None] * len(idx) for v in run.variables}
    else:
        u, um = f(data.update_ratio, data.update_ratio_missing)
        body["update_ratio"] = dict(zip(run.variables, _columns(u, um), strict=True))
    body["skipped"] = i(data.skipped).astype(bool).tolist()
    body["probe"] = probe_series(run, probes or [])
    body["gaps"] = [{"from_step": g_.from_step, "to_step": g_.to_step, "dropped": g_.dropped} for g_ in gaps]
    body["downsampled"] = starts is not None
    # pydantic's compiled encoder: several times faster than json.dumps on these MB-sized bodies.
    return pydantic_core.to_json(body, inf_nan_mode="strings").decode()
