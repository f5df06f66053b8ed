"""A run's steps as one table (Parquet or CSV), streamed page by page from SQLite.

One row per step; the columns derive from the stored step fields (``gradwatch.stepfields``):
the scalars in declaration order (``step``, ``epoch``, ``time``, ``loss``, ``lr``,
``global_norm``, the clip values, ...), then ``<field>:<variable>`` per variable
(``grad_norm``, ``nonfinite``, ``update_ratio``) and ``bn:<layer>:<BN field>`` per BatchNorm
layer. ``null`` is "not reported" and stays distinct from NaN in Parquet (CSV writes an
empty cell and ``nan``). Each page of steps becomes one Parquet row group or one CSV block,
so memory stays bounded by the page size whatever the length of the run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gradwatch.export_client import FORMATS as FORMATS  # declared where `gradwatch export` checks them
from gradwatch.stepfields import BN_FIELDS, StepField

from .stepcodec import STORED, StepColumns
from .store import RunRow, Store

ExportFormat = Literal["parquet", "csv"]
if get_args(ExportFormat) != FORMATS:  # the query parameter's type (app.py) spells the formats for FastAPI
    raise TypeError(f"ExportFormat {get_args(ExportFormat)} differs from export_client.FORMATS {FORMATS}")
MEDIA_TYPES: dict[str, str] = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8"}
#: Per-page budget of table cells: a page of a 200-variable run is ~4,900 steps (~30 MB in flight).
PAGE_CELLS = 3_000_000

SCALARS: tuple[StepField, ...] = tuple(f for f in STORED if f.shape == "scalar")
VECTORS: tuple[StepField, ...] = tuple(f for f in STORED if f.shape == "variable")
BN: tuple[StepField, ...] = tuple(f for f in STORED if f.shape == "bn_layer")


def _arrow_type(f: StepField) -> pa.DataType:
    if f.storage == "text":
        return pa.string()
    if f.kind == "bool":
        return pa.bool_()
    if f.kind == "count":
        return pa.int64()
    return pa.float32() if f.storage in ("f32_blob", "bn_blob") else pa.float64()


def _nullable(f: StepField) -> bool:
    return f.nullable or f.storage in ("masked_real", "bn_blob")


def schema(run: RunRow) -> pa.Schema:
    """The export's columns for ``run``, in order."""
    cols = [pa.field(f.stored_as, _arrow_type(f), nullable=_nullable(f)) for f in SCALARS]
    for f in VECTORS:
        nullable = _nullable(f) or bool(run.variable_sets)  # null: the variable was not watched on that step
        cols += [pa.field(f"{f.stored_as}:{v}", _arrow_type(f), nullable=nullable) for v in run.variables]
    for f in BN:
        cols += [pa.field(f"{f.stored_as}:{layer}:{k}", _arrow_type(f)) for layer in run.bn_layers for k in BN_FIELDS]
    return pa.schema(cols)


def width(run: RunRow) -> int:
    """Cells in one exported row of ``run``."""
    return len(SCALARS) + len(VECTORS) * len(run.variables) + len(BN_FIELDS) * len(run.bn_layers)


def page_rows(run: RunRow) -> int:
    """Steps per page: within ``PAGE_CELLS`` whatever the width (a 100,000-variable run: ~10 steps)."""
    return max(1, min(20_000, PAGE_CELLS // width(run)))


def _column(values: Any, missing: Any, typ: pa.DataType) -> pa.Array:
    mask = missing if missing is not None and missing.any() else None
    return pa.array(np.ascontiguousarray(values, dtype=typ.to_pandas_dtype()), type=typ, mask=mask)


def record_batch(run: RunRow, data: StepColumns, target: pa.Schema) -> pa.RecordBatch:
    """One page of steps as one Arrow batch."""
    n = len(data)
    arrays: list[pa.Array] = []
    for f in SCALARS:
        typ = _arrow_type(f)
        if f.storage == "text":
            arrays.append(pa.array(data.clip_mode, type=typ))
        elif f.storage == "masked_real":
            arrays.append(_column(data.floats[f.stored_as], data.missing[f.stored_as], typ))
        else:
            arrays.append(_column(data.scalar(f.stored_as), None, typ))
    for f in VECTORS:
        typ, values, missing = _arrow_type(f), data.vectors[f.stored_as], data.vector_missing[f.stored_as]
        if not values.flags.writeable and values.ndim == 2 and values.strides[0] == 0:
            # The usual never-measured / all-zero matrix: one shared column instead of one per variable.
            shared = (
                pa.nulls(n, typ)
                if f.nullable and missing.all()
                else _column(values[:, 0] if run.variables else np.zeros(n), None, typ)
            )
            arrays += [shared] * len(run.variables)
        elif data.inactive is not None and f.stored_as != "nonfinite":  # not watched: null, not NaN
            rows = missing if f.nullable else np.zeros(n, dtype=bool)
            arrays += [_column(values[:, j], rows | data.inactive[:, j], typ) for j in range(len(run.variables))]
        else:
            arrays += [_column(values[:, j], missing if f.nullable else None, typ) for j in range(len(run.variables))]
    for f in BN:
        typ = _arrow_type(f)
        arrays += [
            _column(data.bn[:, li, k], data.bn_missing, typ)
            for li in range(len(run.bn_layers))
            for k in range(len(BN_FIELDS))
        ]
    return pa.RecordBatch.from_arrays(arrays, schema=target)


class _Sink:
    """A write-only file for pyarrow's writers whose bytes are taken out after each page."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._written += len(b)
        return len(b)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


class Encoder:
    """``write(page) -> bytes`` per page, then ``close() -> bytes`` (the Parquet footer)."""

    def __init__(self, run: RunRow, fmt: ExportFormat) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format={fmt!r} is not one of {FORMATS}")
        self.run = run
        self.schema = schema(run)
        self._sink = _Sink()
        self._writer: Any = (
            pq.ParquetWriter(self._sink, self.schema, compression="zstd", use_dictionary=False)
            if fmt == "parquet"
            else pacsv.CSVWriter(self._sink, self.schema)
        )

    def write(self, page: StepColumns) -> bytes:
        self._writer.write_batch(record_batch(self.run, page, self.schema))
        return self._sink.take()

    def close(self) -> bytes:
        self._writer.close()
        return self._sink.take()


def filename(run: RunRow, fmt: ExportFormat) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run.name).strip("._")[:80] or "run"
    return f"gradwatch-run{run.id}-{safe}.{fmt}"


async def stream(store: Store, run: RunRow, fmt: ExportFormat) -> AsyncIterator[bytes]:
    """The export of ``run``'s steps up to its last stored one, page by page.

    Pages are read on the database thread (short reads; ingest writes go in between) and
    encoded on a worker thread, so neither the event loop nor ingest waits for an export.
    """
    encoder = Encoder(run, fmt)
    until = run.last_step if run.last_step is not None else -1
    after, limit = -1, page_rows(run)
    while True:
        page = await store.call(store.read_step_page, run, after, until, limit)
        if not len(page):
            break
        yield await asyncio.to_thread(encoder.write, page)
        after = int(page.step[-1])
    yield await asyncio.to_thread(encoder.close)
