"""What the rules read: one ``StepBatch`` of arrays per trainer ``steps`` frame, plus small
vectorised helpers (run lengths with a carry, a fixed-size ring of rows).

Building the batch is the only per-record Python work of the alert path; every
rule then works on whole arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradwatch.protocol import BN_FIELDS, StepRecord

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

MEAN_DELTA = BN_FIELDS.index("moving_mean_delta")
VAR_DELTA = BN_FIELDS.index("moving_variance_delta")


def _floats(rows: Sequence[Sequence[float | str]], width: int) -> FloatArray:
    """Wire floats (numbers or "NaN"/"Infinity"/"-Infinity") as a float64 matrix."""
    if not rows:
        return np.zeros((0, width))
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def _scalar(x: float | str | None, missing: float = math.nan) -> float:
    return missing if x is None else float(x)


@dataclass
class StepBatch:
    step: IntArray
    global_norm: FloatArray
    grad: FloatArray  # (n, variables)
    nan: IntArray  # (n, variables)
    inf: IntArray
    loss_nonfinite: BoolArray  # the flag, or a reported loss that is NaN/Inf
    weight_nonfinite: IntArray
    clipped: BoolArray
    clip_threshold: FloatArray  # NaN when none
    clip_scale: FloatArray
    skipped: BoolArray
    bn: FloatArray  # (n, bn layers, len(BN_FIELDS)), NaN rows where a step had no BN report
    bn_present: BoolArray

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @classmethod
    def from_records(cls, records: list[StepRecord], n_vars: int, n_bn: int) -> StepBatch:
        n = len(records)
        bn = np.full((n, n_bn, len(BN_FIELDS)), np.nan)
        present = np.zeros(n, dtype=bool)
        if n_bn:
            for i, r in enumerate(records):
                if r.bn:
                    bn[i] = np.asarray(r.bn, dtype=np.float64)
                    present[i] = True
        return cls(
            step=np.fromiter((r.step for r in records), dtype=np.int64, count=n),
            global_norm=np.fromiter((_scalar(r.global_norm) for r in records), dtype=np.float64, count=n),
            grad=_floats([r.grad_norm for r in records], n_vars),
            nan=np.asarray([r.grad_nan for r in records], dtype=np.int64).reshape(n, n_vars),
            inf=np.asarray([r.grad_inf for r in records], dtype=np.int64).reshape(n, n_vars),
            loss_nonfinite=np.fromiter((r.loss_nonfinite or not math.isfinite(_scalar(r.loss, 0.0)) for r in records),
                                       dtype=bool, count=n),
            weight_nonfinite=np.fromiter((r.weight_nonfinite for r in records), dtype=np.int64, count=n),
            clipped=np.fromiter((r.clipped for r in records), dtype=bool, count=n),
            clip_threshold=np.fromiter((_scalar(r.clip_threshold) for r in records), dtype=np.float64, count=n),
            clip_scale=np.fromiter((_scalar(r.clip_scale) for r in records), dtype=np.float64, count=n),
            skipped=np.fromiter((r.skipped for r in records), dtype=bool, count=n),
            bn=bn,
            bn_present=present,
        )

    def take(self, rows: slice | IntArray) -> StepBatch:
        return StepBatch(**{k: v[rows] for k, v in self.__dict__.items()})


def run_lengths(flags: BoolArray, carry: IntArray) -> tuple[IntArray, IntArray]:
    """Length of the current run of True ending at each row, per column.

    ``flags`` is (n, k); ``carry`` (k,) is the run length before the first row.
    Returns ``(runs (n, k), new carry (k,))``.
    """
    n = flags.shape[0]
    if n == 0:
        return np.zeros(flags.shape, dtype=np.int64), carry
    rows = np.arange(n, dtype=np.int64)[:, None]
    last_false = np.maximum.accumulate(np.where(flags, -1, rows), axis=0)
    runs = rows - last_false
    runs = np.where(last_false < 0, runs + carry[None, :], runs)
    return runs.astype(np.int64), runs[-1].astype(np.int64)


def first_at_least(runs: IntArray, need: int) -> tuple[BoolArray, IntArray]:
    """Per column: whether a run reaches ``need`` and the first row where it does."""
    hit = runs >= need
    return np.asarray(hit.any(axis=0), dtype=bool), np.asarray(hit.argmax(axis=0), dtype=np.int64)


class Ring:
    """The last ``size`` rows of a (size, width) float matrix; unfilled rows are excluded."""

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self.data = np.zeros((size, width))
        self.filled = 0
        self.pos = 0

    def extend(self, rows: FloatArray) -> None:
        if rows.shape[0] >= self.size:
            self.data[:] = rows[-self.size:]
            self.pos, self.filled = 0, self.size
            return
        k = rows.shape[0]
        end = self.pos + k
        if end <= self.size:
            self.data[self.pos:end] = rows
        else:
            cut = self.size - self.pos
            self.data[self.pos:] = rows[:cut]
            self.data[:k - cut] = rows[cut:]
        self.pos = end % self.size
        self.filled = min(self.size, self.filled + k)

    def rows(self) -> FloatArray:
        return self.data if self.filled == self.size else self.data[:self.filled]

    def median(self) -> FloatArray:
        return np.median(self.rows(), axis=0)
