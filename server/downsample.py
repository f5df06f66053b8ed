"""Min/max-per-bucket downsampling: spikes and non-finite values survive.

``n`` samples become ``buckets = max_points // 2`` contiguous buckets of
near-equal size; each bucket yields two points, at its first and its last
step: the bucket minimum and the bucket maximum (of finite and infinite
values; +/-Infinity wins max/min naturally). If a bucket contains a NaN, its
minimum point becomes NaN, so a NaN is never averaged or strided away.
Missing values (``None`` on the wire) are ignored; an all-missing bucket
stays missing. Everything is vectorised with ``np.fmin.reduceat`` & co.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def bucket_starts(n: int, max_points: int) -> IntArray | None:
    """Start index of each bucket, or ``None`` when ``n`` points already fit."""
    if max_points < 2:
        raise ValueError(f"max_points={max_points} must be at least 2 (each bucket keeps a min and a max)")
    if n <= max_points:
        return None
    buckets = max_points // 2
    return np.unique(np.linspace(0, n, buckets, endpoint=False).astype(np.int64))


def positions(starts: IntArray, n: int) -> IntArray:
    """Indices of the two points per bucket: its first and its last sample."""
    ends = np.append(starts[1:], n) - 1
    return np.stack([starts, ends], axis=1).reshape(-1)


def minmax(values: FloatArray, starts: IntArray, missing: BoolArray | None = None) -> tuple[FloatArray, BoolArray]:
    """Downsample along axis 0 (1-D or 2-D ``values``).

    Returns ``(out, out_missing)`` with ``2 * len(starts)`` rows: for each bucket
    ``[min, max]`` (min replaced by NaN when the bucket holds a NaN). A 2-D ``missing`` (one flag
    per value) gives a 2-D ``out_missing``.
    """
    v = np.asarray(values)
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    if missing is None:
        missing = np.zeros(v.shape[0], dtype=bool)
    cells = missing.ndim > 1  # missing per value (a variable not watched on some steps), not per row
    miss = missing if cells else missing.reshape((-1,) + (1,) * (v.ndim - 1))
    is_nan = np.isnan(v) & ~miss
    lo = np.fmin.reduceat(v, starts, axis=0)  # fmin/fmax skip NaN (and missing, which is NaN too)
    hi = np.fmax.reduceat(v, starts, axis=0)
    has_nan = np.logical_or.reduceat(is_nan, starts, axis=0)
    present = np.logical_or.reduceat(np.broadcast_to(~miss, v.shape), starts, axis=0)
    lo = np.where(has_nan, np.nan, lo)
    out = np.stack([lo, hi], axis=1).reshape((-1, *v.shape[1:]))
    absent: BoolArray = np.asarray(~present, dtype=bool)
    if cells:
        return out, np.repeat(absent, 2, axis=0)
    if absent.ndim > 1:  # a row is missing only if missing for every column
        absent = np.asarray(absent.all(axis=tuple(range(1, absent.ndim))), dtype=bool)
    out_missing = np.repeat(absent, 2)
    return out, out_missing


def minmax_int(values: IntArray, starts: IntArray) -> IntArray:
    """Integer/boolean series (counts, flags): ``[min, max]`` per bucket."""
    lo = np.minimum.reduceat(values, starts, axis=0)
    hi = np.maximum.reduceat(values, starts, axis=0)
    return np.stack([lo, hi], axis=1).reshape((-1, *values.shape[1:]))
