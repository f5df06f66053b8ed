"""How one ``StepRecord`` becomes one SQLite row, and rows become numpy columns.

Scalars are ordinary columns. SQLite stores a NaN REAL as NULL, so a bitmask
column ``nan_mask`` remembers which NULLs were NaN (``None`` on the wire stays
NULL without its bit). Per-variable vectors are raw numpy blobs:
``grad_norm`` float32, ``nonfinite`` (nan+inf count) uint32 or NULL when all
zero, ``bn`` float32 ``len(bn_layers) x len(BN_FIELDS)`` or NULL when the step
carried no BN rows, ``update_ratio`` float32 per variable or NULL when the step
did not measure it; ``skipped`` 0/1. float32 keeps about 7 significant digits; a gradient norm
above 3.4e38 is stored as Infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradwatch.protocol import BN_FIELDS, StepRecord, decode_float

#: Float scalar columns in ``steps``; bit i of ``nan_mask`` is FLOAT_COLUMNS[i].
FLOAT_COLUMNS: tuple[str, ...] = (
    "loss", "lr", "global_norm", "clip_threshold", "clip_scale", "clipped_fraction", "steps_per_sec",
)
INT_COLUMNS: tuple[str, ...] = ("epoch", "clipped", "weight_nonfinite", "loss_nonfinite")
ROW_COLUMNS: tuple[str, ...] = (
    "run_id", "step", "time", *FLOAT_COLUMNS, *INT_COLUMNS, "clip_mode", "nan_mask", "grad_norm", "nonfinite", "bn",
    "update_ratio", "skipped",
)
_U32_MAX = 2**32 - 1

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def _wire(x: float | str | None) -> float | None:
    return None if x is None else decode_float(x)


def wire_array(values: list[Any], dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
    """Validated wire floats (numbers and "NaN"/"Infinity"/"-Infinity", nested lists too) as one array.

    numpy parses those three spellings itself, so the list converts in one C call instead of one
    ``decode_float`` per element (MobileNetV2: 158 norms and 416 BN values per record). Only for
    values that passed ``StepRecord`` validation, which admits no other strings.
    """
    return np.array(values, dtype=dtype)


def record_to_row(run_id: int, rec: StepRecord) -> tuple[Any, ...]:
    """One INSERT row, columns in ``ROW_COLUMNS`` order."""
    floats: list[float | None] = []
    nan_mask = 0
    for i, name in enumerate(FLOAT_COLUMNS):
        v = _wire(getattr(rec, name))
        if v is not None and math.isnan(v):
            nan_mask |= 1 << i
            v = None
        floats.append(v)
    grad = wire_array(rec.grad_norm, np.float32)
    counts = np.asarray(rec.grad_nan, dtype=np.int64) + np.asarray(rec.grad_inf, dtype=np.int64)
    nonfinite = np.minimum(counts, _U32_MAX).astype(np.uint32).tobytes() if counts.any() else None
    bn = None
    if rec.bn:
        bn = wire_array(rec.bn, np.float32).tobytes()
    ratio = None
    if rec.update_ratio is not None:
        ratio = np.asarray(rec.update_ratio, dtype=np.float64).astype(np.float32).tobytes()
    return (
        run_id, rec.step, rec.time, *floats,
        rec.epoch, int(rec.clipped), rec.weight_nonfinite, int(rec.loss_nonfinite),
        rec.clip_mode, nan_mask, grad.tobytes(), nonfinite, bn, ratio, int(rec.skipped),
    )


@dataclass
class StepColumns:
    """All stored steps of one run in a step range, column-wise.

    ``floats[name]`` holds NaN both for NaN and for missing; ``missing[name]``
    tells them apart. ``bn`` is ``(n, layers, len(BN_FIELDS))`` with NaN where
    ``bn_missing`` (a step without BN rows).
    """

    step: IntArray
    time: FloatArray
    floats: dict[str, FloatArray] = field(default_factory=dict)
    missing: dict[str, BoolArray] = field(default_factory=dict)
    ints: dict[str, IntArray] = field(default_factory=dict)
    #: float32 as stored (downsampling only selects values); float64 when empty.
    grad_norm: npt.NDArray[np.floating[Any]] = field(default_factory=lambda: np.zeros((0, 0)))
    nonfinite: IntArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    bn: FloatArray = field(default_factory=lambda: np.zeros((0, 0, len(BN_FIELDS))))
    bn_missing: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: (n, variables), NaN where ``update_ratio_missing`` (a step that did not measure it).
    update_ratio: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    update_ratio_missing: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    skipped: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.step.shape[0])


def _unmeasured(n: int, n_vars: int) -> FloatArray:
    """All-NaN update ratios (the usual case): a read-only view, no (n, variables) allocation."""
    return np.broadcast_to(np.float64(np.nan), (n, n_vars))


def _no_nonfinite(n: int, n_vars: int) -> IntArray:
    """All-zero NaN/Inf counts (the usual case): a read-only view, no (n, variables) allocation."""
    return np.broadcast_to(np.int64(0), (n, n_vars))


def rows_to_columns(rows: list[tuple[Any, ...]], n_vars: int, n_bn: int) -> StepColumns:
    """Decode rows selected as ``ROW_COLUMNS[1:]`` (no run_id), ordered by step."""
    n = len(rows)
    nf = len(FLOAT_COLUMNS)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in ROW_COLUMNS[1:]]
    step = np.array(cols[0], dtype=np.int64)
    time = np.array(cols[1], dtype=np.float64)
    nan_mask = np.array(cols[2 + nf + len(INT_COLUMNS) + 1], dtype=np.int64)
    out = StepColumns(step=step, time=time)
    for i, name in enumerate(FLOAT_COLUMNS):
        raw = cols[2 + i]
        values = np.array(raw, dtype=np.float64) if n else np.zeros(0)
        null = np.array([v is None for v in raw], dtype=bool)
        is_nan = (nan_mask >> i) & 1 == 1
        out.floats[name] = values
        out.missing[name] = null & ~is_nan
    for j, name in enumerate(INT_COLUMNS):
        out.ints[name] = np.array(cols[2 + nf + j], dtype=np.int64)
    base = 2 + nf + len(INT_COLUMNS) + 2
    grad_blobs, nonfinite_blobs, bn_blobs = cols[base], cols[base + 1], cols[base + 2]
    ratio_blobs, skipped = cols[base + 3], cols[base + 4]
    out.skipped = np.array(skipped, dtype=np.int64)
    out.update_ratio_missing = np.array([b is None for b in ratio_blobs], dtype=bool) if n else np.zeros(0, bool)
    if out.update_ratio_missing.all():
        out.update_ratio = _unmeasured(n, n_vars)
    else:
        out.update_ratio = np.full((n, n_vars), np.nan)
        for i, blob in enumerate(ratio_blobs):
            if blob is not None and n_vars:
                out.update_ratio[i] = np.frombuffer(blob, dtype=np.float32)
    if n and n_vars:
        # Kept float32 as stored: downsampling only selects values, and float32 -> Python float is exact.
        out.grad_norm = np.frombuffer(b"".join(grad_blobs), dtype=np.float32).reshape(n, n_vars)
    else:
        out.grad_norm = np.zeros((n, n_vars))
    if all(blob is None for blob in nonfinite_blobs):
        out.nonfinite = _no_nonfinite(n, n_vars)
    else:
        out.nonfinite = np.zeros((n, n_vars), dtype=np.int64)
        for i, blob in enumerate(nonfinite_blobs):
            if blob is not None:
                out.nonfinite[i] = np.frombuffer(blob, dtype=np.uint32)
    width = len(BN_FIELDS)
    out.bn = np.full((n, n_bn, width), np.nan)
    out.bn_missing = np.array([b is None for b in bn_blobs], dtype=bool) if n else np.zeros(0, dtype=bool)
    if n_bn:
        for i, blob in enumerate(bn_blobs):
            if blob is not None:
                out.bn[i] = np.frombuffer(blob, dtype=np.float32).reshape(n_bn, width)
    return out


def concat_columns(parts: list[StepColumns], n_vars: int, n_bn: int) -> StepColumns:
    """Join columns decoded chunk by chunk, in step order (see ``Store.read_steps``)."""
    if len(parts) <= 1:
        return parts[0] if parts else rows_to_columns([], n_vars, n_bn)

    def cat(arrays: list[Any]) -> Any:
        return np.concatenate(arrays)

    out = StepColumns(step=cat([p.step for p in parts]), time=cat([p.time for p in parts]))
    for name in FLOAT_COLUMNS:
        out.floats[name] = cat([p.floats[name] for p in parts])
        out.missing[name] = cat([p.missing[name] for p in parts])
    for name in INT_COLUMNS:
        out.ints[name] = cat([p.ints[name] for p in parts])
    n = len(out)
    out.grad_norm = cat([p.grad_norm for p in parts])
    out.bn, out.bn_missing = cat([p.bn for p in parts]), cat([p.bn_missing for p in parts])
    out.skipped = cat([p.skipped for p in parts])
    out.update_ratio_missing = cat([p.update_ratio_missing for p in parts])
    # Keep the all-NaN / all-zero views of the usual case instead of materialising them.
    if out.update_ratio_missing.all():
        out.update_ratio = _unmeasured(n, n_vars)
    else:
        out.update_ratio = cat([p.update_ratio for p in parts])
    if not any(p.nonfinite.any() for p in parts):
        out.nonfinite = _no_nonfinite(n, n_vars)
    else:
        out.nonfinite = cat([p.nonfinite for p in parts])
    return out
