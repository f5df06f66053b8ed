"""How one ``StepRecord`` becomes one SQLite row, and rows become numpy columns.

Everything here is derived from ``gradwatch.stepfields.STEP_FIELDS`` (its ``storage``):
scalars are ordinary columns; SQLite stores a NaN REAL as NULL, so a bitmask column
``nan_mask`` remembers which NULLs of the ``masked_real`` columns were NaN (``None`` on the
wire stays NULL without its bit). Per-variable vectors are raw numpy blobs: ``f32_blob``
float32 (NULL when a nullable vector was not reported), ``u32_sum_blob`` uint32 counts
(``grad_nan + grad_inf`` as ``nonfinite``; NULL when all zero), ``bn_blob`` float32
``len(bn_layers) x len(BN_FIELDS)`` or NULL when the step carried no BN rows. float32
keeps about 7 significant digits; a gradient norm above 3.4e38 is stored as Infinity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradwatch.protocol import StepRecord, decode_float
from gradwatch.stepfields import BN_FIELDS, STEP_FIELDS, StepField, stored_fields

STORED: tuple[StepField, ...] = stored_fields()
#: Float scalar columns; bit i of ``nan_mask`` is FLOAT_COLUMNS[i] (the order is part of the file format).
FLOAT_COLUMNS: tuple[str, ...] = tuple(f.stored_as for f in STORED if f.storage == "masked_real")
#: Integer scalar columns (counts and 0/1 flags).
INT_COLUMNS: tuple[str, ...] = tuple(f.stored_as for f in STORED if f.storage == "integer")
#: Per-variable / per-layer blob columns.
VECTOR_COLUMNS: tuple[str, ...] = tuple(f.stored_as for f in STORED if f.shape != "scalar")
ROW_COLUMNS: tuple[str, ...] = ("run_id", *(f.stored_as for f in STORED), "nan_mask")
_U32_MAX = 2**32 - 1

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def sql_declaration(f: StepField) -> str:
    """The column's SQL type and constraints (``server/schema.py`` builds the table from these)."""
    base = {
        "key": "INTEGER",
        "integer": "INTEGER",
        "real": "REAL",
        "masked_real": "REAL",
        "text": "TEXT",
        "f32_blob": "BLOB",
        "u32_sum_blob": "BLOB",
        "bn_blob": "BLOB",
    }[f.storage]
    # A masked REAL holds NaN as NULL; the count and BN blobs are NULL when empty.
    may_be_null = f.nullable or f.storage in ("masked_real", "u32_sum_blob", "bn_blob")
    decl = base if may_be_null else f"{base} NOT NULL"
    return decl if f.sql_default is None else f"{decl} DEFAULT {f.sql_default}"


def wire_array(values: list[Any], dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
    """Validated wire floats (numbers and "NaN"/"Infinity"/"-Infinity", nested lists too) as one array.

    numpy parses those three spellings itself, so the list converts in one C call instead of one
    ``decode_float`` per element (MobileNetV2: 158 norms and 416 BN values per record). Only for
    values that passed ``StepRecord`` validation, which admits no other strings.
    """
    return np.array(values, dtype=dtype)


def _encoder(f: StepField) -> Callable[[StepRecord], Any]:
    """``record -> column value`` for every stored column except the masked floats."""
    name = f.name
    if f.storage in ("key", "integer"):
        return lambda r: int(getattr(r, name))
    if f.storage in ("real", "text"):
        return lambda r: getattr(r, name)
    if f.storage == "f32_blob":
        return lambda r: None if (v := getattr(r, name)) is None else wire_array(v, np.float32).tobytes()
    if f.storage == "bn_blob":
        return lambda r: wire_array(v, np.float32).tobytes() if (v := getattr(r, name)) else None
    summed = tuple(g.name for g in STEP_FIELDS if g.stored_as == f.stored_as)  # u32_sum_blob

    def counts(r: StepRecord) -> bytes | None:
        # Each count saturates before the sum, so no pair of in-bounds counts can overflow.
        total = sum(np.minimum(np.asarray(getattr(r, n), dtype=np.uint64), _U32_MAX) for n in summed)
        return np.minimum(total, _U32_MAX).astype(np.uint32).tobytes() if np.any(total) else None

    return counts


_ENCODERS = [(f.stored_as, None if f.storage == "masked_real" else _encoder(f)) for f in STORED]


def record_to_row(run_id: int, rec: StepRecord) -> tuple[Any, ...]:
    """One INSERT row, columns in ``ROW_COLUMNS`` order."""
    row: list[Any] = [run_id]
    nan_mask, bit = 0, 0
    for name, encode in _ENCODERS:
        if encode is not None:
            row.append(encode(rec))
            continue
        v = None if (w := getattr(rec, name)) is None else decode_float(w)
        if v is not None and math.isnan(v):
            nan_mask |= 1 << bit
            v = None
        row.append(v)
        bit += 1
    row.append(nan_mask)
    return tuple(row)


@dataclass
class StepColumns:
    """All stored steps of one run in a step range, column-wise.

    ``floats[name]`` holds NaN both for NaN and for missing; ``missing[name]`` tells them
    apart. ``vectors[column]`` is ``(n, variables)`` (``bn``: ``(n, layers, len(BN_FIELDS))``),
    NaN (counts: 0) on the rows where ``vector_missing[column]``. ``grad_norm`` stays float32
    as stored (downsampling only selects values); an all-missing or all-zero matrix is a
    read-only broadcast view (the usual case: no ``(n, variables)`` allocation).
    """

    step: IntArray
    time: FloatArray
    clip_mode: list[str] = field(default_factory=list)
    floats: dict[str, FloatArray] = field(default_factory=dict)
    missing: dict[str, BoolArray] = field(default_factory=dict)
    ints: dict[str, IntArray] = field(default_factory=dict)
    vectors: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    vector_missing: dict[str, BoolArray] = field(default_factory=dict)
    #: ``(n, variables)``: True where a variable was not watched on that step (``server/varsets.py``);
    #: ``None`` when every variable was watched on every step.
    inactive: BoolArray | None = None

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def scalar(self, column: str) -> npt.NDArray[Any]:
        """The numeric scalar column ``column`` (``step``, ``time``, a float or an integer column)."""
        if column in ("step", "time"):
            return self.step if column == "step" else self.time
        return self.floats[column] if column in self.floats else self.ints[column]

    @property
    def grad_norm(self) -> npt.NDArray[np.floating[Any]]:
        return self.vectors["grad_norm"]

    @property
    def nonfinite(self) -> IntArray:
        return self.vectors["nonfinite"]

    @property
    def bn(self) -> FloatArray:
        return self.vectors["bn"]

    @property
    def bn_missing(self) -> BoolArray:
        return self.vector_missing["bn"]

    @property
    def update_ratio(self) -> FloatArray:
        return self.vectors["update_ratio"]

    @property
    def update_ratio_missing(self) -> BoolArray:
        return self.vector_missing["update_ratio"]

    @property
    def skipped(self) -> IntArray:
        return self.ints["skipped"]


def _fits(blob: Any, size: int) -> bool:
    return blob is not None and len(blob) == size


def _decode_vector(f: StepField, blobs: tuple[Any, ...], n_vars: int, n_bn: int) -> tuple[Any, BoolArray]:
    n = len(blobs)
    # A blob of another width (stored before the door checked widths) reads as missing, never as an error.
    size = 4 * (n_bn * len(BN_FIELDS) if f.storage == "bn_blob" else n_vars)
    if any(b is not None and len(b) != size for b in blobs):
        blobs = tuple(b if _fits(b, size) else None for b in blobs)
    missing = np.array([b is None for b in blobs], dtype=bool) if n else np.zeros(0, dtype=bool)
    if f.storage == "bn_blob":
        out = np.full((n, n_bn, len(BN_FIELDS)), np.nan)
        if n_bn:
            for i in np.flatnonzero(~missing).tolist():
                out[i] = np.frombuffer(blobs[i], dtype=np.float32).reshape(n_bn, len(BN_FIELDS))
        return out, missing
    if f.storage == "u32_sum_blob":  # an all-zero row is stored as NULL: it is zero, not missing
        if missing.all():
            return np.broadcast_to(np.int64(0), (n, n_vars)), np.zeros(n, dtype=bool)
        counts = np.zeros((n, n_vars), dtype=np.int64)
        for i in np.flatnonzero(~missing).tolist():
            counts[i] = np.frombuffer(blobs[i], dtype=np.uint32)
        return counts, np.zeros(n, dtype=bool)
    if not f.nullable and not missing.any():  # f32, present on every step: one join, kept float32
        if n and n_vars:
            return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(n, n_vars), missing
        return np.zeros((n, n_vars)), missing
    if missing.all():
        return np.broadcast_to(np.float64(np.nan), (n, n_vars)), missing
    values = np.full((n, n_vars), np.nan)
    if n_vars:
        for i in np.flatnonzero(~missing).tolist():
            values[i] = np.frombuffer(blobs[i], dtype=np.float32)
    return values, missing


def _is_broadcast(a: npt.NDArray[Any]) -> bool:
    """A read-only view of one repeated value (``_decode_vector``'s all-missing / all-zero case)."""
    return not a.flags.writeable and a.ndim > 0 and a.strides[0] == 0 and a.size > 0


_INDEX = {name: i for i, name in enumerate(ROW_COLUMNS[1:])}


def rows_to_columns(rows: list[tuple[Any, ...]], n_vars: int, n_bn: int) -> StepColumns:
    """Decode rows selected as ``ROW_COLUMNS[1:]`` (no run_id), ordered by step."""
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in ROW_COLUMNS[1:]]
    nan_mask = np.array(cols[_INDEX["nan_mask"]], dtype=np.int64)
    out = StepColumns(
        step=np.array(cols[_INDEX["step"]], dtype=np.int64),
        time=np.array(cols[_INDEX["time"]], dtype=np.float64),
        clip_mode=list(cols[_INDEX["clip_mode"]]),
    )
    for i, name in enumerate(FLOAT_COLUMNS):
        raw = cols[_INDEX[name]]
        out.floats[name] = np.array(raw, dtype=np.float64) if n else np.zeros(0)
        null = np.array([v is None for v in raw], dtype=bool)
        out.missing[name] = null & ~((nan_mask >> i) & 1 == 1)
    for name in INT_COLUMNS:
        out.ints[name] = np.array(cols[_INDEX[name]], dtype=np.int64)
    for f in STORED:
        if f.shape != "scalar":
            out.vectors[f.stored_as], out.vector_missing[f.stored_as] = _decode_vector(
                f, cols[_INDEX[f.stored_as]], n_vars, n_bn
            )
    return out


def concat_columns(parts: list[StepColumns], n_vars: int, n_bn: int) -> StepColumns:
    """Join columns decoded chunk by chunk, in step order (see ``Store.read_steps``)."""
    if len(parts) <= 1:
        return parts[0] if parts else rows_to_columns([], n_vars, n_bn)

    def cat(arrays: list[Any]) -> Any:
        return np.concatenate(arrays)

    out = StepColumns(
        step=cat([p.step for p in parts]),
        time=cat([p.time for p in parts]),
        clip_mode=[m for p in parts for m in p.clip_mode],
    )
    for name in FLOAT_COLUMNS:
        out.floats[name] = cat([p.floats[name] for p in parts])
        out.missing[name] = cat([p.missing[name] for p in parts])
    for name in INT_COLUMNS:
        out.ints[name] = cat([p.ints[name] for p in parts])
    n = len(out)
    if any(p.inactive is not None for p in parts):
        out.inactive = cat(
            [p.inactive if p.inactive is not None else np.zeros((len(p), n_vars), dtype=bool) for p in parts]
        )
    for name in VECTOR_COLUMNS:
        out.vector_missing[name] = cat([p.vector_missing[name] for p in parts])
        first = parts[0].vectors[name]
        if all(_is_broadcast(p.vectors[name]) for p in parts):  # keep the all-missing / all-zero view
            fill = first.reshape(-1)[0] if first.size else first.dtype.type(0)
            out.vectors[name] = np.broadcast_to(fill, (n, *first.shape[1:]))
        else:
            out.vectors[name] = cat([p.vectors[name] for p in parts])
    return out
