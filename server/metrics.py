"""Turns stored step columns into the ``/api/runs/{id}/metrics`` JSON body."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic_core

from gradwatch.protocol import BN_FIELDS
from gradwatch.stepfields import BN_SERIES_KEYS

from .downsample import BoolArray, FloatArray, bucket_starts, minmax, minmax_int, positions
from .stepcodec import STORED, StepColumns
from .store import GapRow, RunRow

#: Metrics key for each ``BN_FIELDS`` column.
BN_KEYS = BN_SERIES_KEYS


def _floats(values: FloatArray, missing: BoolArray) -> list[Any]:
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(missing).tolist():
        out[i] = None
    return out


def _columns(values: FloatArray, missing: BoolArray) -> list[list[Any]]:
    """2-D (n, k) floats -> k lists, ``None`` on missing rows (or, ``missing`` (n, k), missing values)."""
    cols: list[list[Any]] = values.T.tolist()
    for j, col in enumerate(cols):
        for i in np.flatnonzero(missing[:, j] if missing.ndim > 1 else missing).tolist():
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


def _bn(
    run: RunRow, data: StepColumns, f: Callable[[FloatArray, BoolArray], tuple[FloatArray, BoolArray]]
) -> dict[str, dict[str, list[Any]]]:
    bn: dict[str, dict[str, list[Any]]] = {}
    if run.bn_layers:
        width = len(BN_FIELDS)
        cols = _columns(*f(data.bn.reshape(len(data), run.width("bn_layer") * width), data.bn_missing))
        for li, layer in enumerate(run.bn_layers):
            bn[layer] = {BN_KEYS[k]: cols[li * width + k] for k in range(width)}
    return bn


def build_metrics(
    run: RunRow,
    data: StepColumns,
    gaps: list[GapRow],
    max_points: int | None,
    probes: list[Probe] | None = None,
    *,
    omit_empty: bool = False,
) -> str:
    """The metrics body as JSON text (NaN/Inf spelt the wire way).

    ``omit_empty`` leaves out the ``nonfinite`` series of variables whose counts are all
    zero and ``update_ratio`` when no returned step measured it: in a healthy run they
    are half of a large response (the page asks for this; absent means zero / null).
    """
    n = len(data)
    starts = bucket_starts(n, max_points) if max_points is not None else None
    body: dict[str, Any] = {"run_id": run.id}
    # One entry per stored step field (gradwatch.stepfields), by its storage.

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

    for fld in STORED:
        name = fld.stored_as
        if fld.axis or fld.storage == "text":  # coordinates and labels: picked at each kept point
            column = data.clip_mode if fld.storage == "text" else data.scalar(name)
            body[name] = [column[k] for k in idx.tolist()] if isinstance(column, list) else column[idx].tolist()
        elif fld.storage == "masked_real":
            body[name] = _floats(*f(data.floats[name], data.missing[name]))
        elif fld.storage == "integer":
            values = i(data.ints[name])
            body[name] = (values.astype(bool) if fld.kind == "bool" else values).tolist()
        elif fld.storage == "bn_blob":
            body[name] = _bn(run, data, f)
        elif fld.storage == "u32_sum_blob":  # counts; an all-zero series is left out on request
            counts = data.vectors[name]
            if counts.any():
                nf = i(counts)
                keep = nf.any(axis=0) if omit_empty else np.ones(run.width("variable"), dtype=bool)
                body[name] = {v: col.tolist() for v, col, k in zip(run.variables, nf.T, keep, strict=True) if k}
            else:  # the usual case: all zero
                body[name] = {} if omit_empty else {v: [0] * len(idx) for v in run.variables}
        else:  # f32_blob; a never-measured one is left out on request
            missing = data.vector_missing[name]
            if fld.nullable and missing.all():  # skip downsampling an all-missing matrix
                body[name] = {} if omit_empty else {v: [None] * len(idx) for v in run.variables}
            else:
                if data.inactive is not None:  # a variable not watched on a step has no value there (varsets.py)
                    missing = data.inactive | missing[:, None]
                body[name] = dict(zip(run.variables, _columns(*f(data.vectors[name], missing)), strict=True))
    body["probe"] = probe_series(run, probes or [])
    body["gaps"] = [dataclasses.asdict(g_) for g_ in gaps]
    body["downsampled"] = starts is not None
    # pydantic's compiled encoder: several times faster than json.dumps on these MB-sized bodies.
    return pydantic_core.to_json(body, inf_nan_mode="strings").decode()
