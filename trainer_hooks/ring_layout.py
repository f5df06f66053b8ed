"""Where each statistic sits in a row of the statistics ring, derived from the step record.

The compiled step writes one row per step (``graph_stats.py``); the host reads the ring in one transfer
and turns a row into the step's fields (``Layout.step_values``, for ``session.py``'s encoder). Which
columns exist, and in which order, follows ``gradwatch/stepfields.py``: the fields measured in the step
(``writer="device"``), less those derived on the host, plus the few columns that are no step field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradwatch.protocol import CLIP_MODES
from gradwatch.stepfields import STEP_FIELDS, StepField

#: ``CLIP_MODES`` index of value clipping (as ``clipping.CLIP_MODE_IDS`` numbers them).
_VALUE = CLIP_MODES.index("value")

#: Step fields the host derives from the row's raw values (``Layout.unpack``) instead of reading a column.
DERIVED: tuple[str, ...] = ("global_norm", "clipped")
#: Host fields kept in the row anyway: the host's weight scan after a bad step writes its count there.
HOST_WRITTEN: tuple[str, ...] = ("weight_nonfinite",)
#: Columns that are no step field: the step's own verdict on its health (written in the step), and the
#: non-finite elements of a bad step's input features and labels (read by origin.py).
RING_ONLY: tuple[str, ...] = ("unhealthy", "origin_features", "origin_labels")
#: The step fields a buffer row holds, in declaration order (``gradwatch/stepfields.py``).
RING_FIELDS: tuple[StepField, ...] = tuple(
    f for f in STEP_FIELDS if (f.writer == "device" or f.name in HOST_WRITTEN) and f.name not in DERIVED
)
#: Scalars at the start of every buffer row, in this order (raw: ``Layout.unpack`` derives the rest).
SCALARS: tuple[str, ...] = (*(f.name for f in RING_FIELDS if f.shape == "scalar"), *RING_ONLY)
#: Then one block per vector, ``n_vars`` wide each (``grad_norm`` holds squared norms: the host takes the root).
VECTORS: tuple[str, ...] = tuple(f.name for f in RING_FIELDS if f.shape == "variable")
#: A row that was never written is all -1; the step (float64, exact to 2**53) comes first.
if SCALARS[0] != "step" or any(f.shape == "bn_layer" for f in RING_FIELDS):
    raise TypeError(f"the statistics ring cannot hold {SCALARS}, {VECTORS}: it needs 'step' first and no BN rows")
#: Ring values that mean "not measured": ``None`` on the wire (see ``Layout.step_values``).
_UNMEASURED_NAN: tuple[str, ...] = ("clipped_fraction", "update_ratio", "accumulated_norm")


@dataclass(frozen=True)
class Layout:
    """Where each statistic sits in a buffer row."""

    n_vars: int

    @property
    def width(self) -> int:
        return len(SCALARS) + len(VECTORS) * self.n_vars

    def offset(self, vector: str) -> int:
        """The first column of ``vector``'s block."""
        return len(SCALARS) + VECTORS.index(vector) * self.n_vars

    @property
    def update_ratio_offset(self) -> int:
        return self.offset("update_ratio")

    def unpack(self, row: np.ndarray) -> dict[str, Any]:
        """One host-side row as named scalars and vectors, with the derived statistics."""
        n = self.n_vars
        out: dict[str, Any] = {name: float(row[i]) for i, name in enumerate(SCALARS)}
        for name in VECTORS:
            out[name] = row[self.offset(name) : self.offset(name) + n]
        sq = out["grad_norm"]
        out["grad_norm"] = np.sqrt(sq)
        out["global_norm"] = float(np.sqrt(sq.sum()))
        clipping = out["clip_threshold"] > 0
        value_mode = int(out["clip_mode"]) == _VALUE
        out["clipped"] = clipping and (out["clip_scale"] < 1.0 or (value_mode and out["clipped_fraction"] > 0))
        # A micro-step of gradient accumulation clips nothing: its update step clips the average.
        applies = value_mode and clipping and not out["micro_step"]
        out["clipped_fraction"] = out["clipped_fraction"] if applies else float("nan")
        return out

    def step_values(self, row: np.ndarray) -> dict[str, Any]:
        """The step fields a row holds or derives, as the wire has them (``None``: not measured, no threshold)."""
        u = self.unpack(row)
        out: dict[str, Any] = {}
        for f in STEP_FIELDS:
            if f.name not in u:
                continue
            v = u[f.name]
            if f.name in _UNMEASURED_NAN and np.isnan(v).all():
                out[f.name] = None
            elif f.name == "clip_threshold":
                out[f.name] = v if v > 0 else None  # the variable holds <= 0 for "clip nothing"
            elif f.kind == "clip_mode":
                out[f.name] = CLIP_MODES[int(v)]
            elif f.shape == "variable":
                out[f.name] = v.astype(np.int64).tolist() if f.kind == "count" else v.tolist()
            else:
                out[f.name] = {"count": int, "bool": bool}.get(f.kind, float)(v)
        return out
