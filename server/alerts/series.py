"""What the rules read: one ``StepBatch`` of arrays per trainer ``steps`` frame, plus small
vectorised helpers (run lengths with a carry, a fixed-size ring of rows).

Building the batch is the only per-record Python work of the alert path; every
rule then works on whole arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gradwatch.protocol import BN_FIELDS, StepRecord

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

MEAN_DELTA = BN_FIELDS.index("moving_mean_delta")
VAR_DELTA = BN_FIELDS.index("moving_variance_delta")
MEAN_MIN, MEAN_MAX = BN_FIELDS.index("moving_mean_min"), BN_FIELDS.index("moving_mean_max")
VAR_MIN, VAR_MAX = BN_FIELDS.index("moving_variance_min"), BN_FIELDS.index("moving_variance_max")


def _floats(rows: Sequence[Sequence[float | str]], width: int) -> FloatArray:
    """Wire floats (numbers or "NaN"/"Infinity"/"-Infinity") as a float64 matrix."""
    if not rows:
        return np.zeros((0, width))
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def _ratios(records: list[StepRecord], n_vars: int) -> FloatArray:
    """The records' update ratios, NaN rows where a record has none (one conversion when all have them)."""
    if all(r.update_ratio is not None for r in records):
        return _floats([r.update_ratio for r in records], n_vars)  # type: ignore[misc]
    out = np.full((len(records), n_vars), np.nan)
    for i, r in enumerate(records):
        if r.update_ratio is not None:
            out[i] = np.asarray(r.update_ratio, dtype=np.float64)
    return out


@dataclass
class StepBatch:
    step: IntArray
    global_norm: FloatArray
    grad: FloatArray  # (n, variables)
    nan: IntArray  # (n, variables)
    inf: IntArray
    #: The trainer's flag only: a reported loss may be Keras' running mean from its logs (a custom
    #: ``train_step``), stale and NaN for the rest of the epoch once one step was, so its value is no evidence.
    loss_nonfinite: BoolArray
    weight_nonfinite: IntArray
    clipped: BoolArray
    clip_threshold: FloatArray  # NaN when none
    clip_per_variable: BoolArray  # clip mode "norm": the threshold bounds each variable's norm, not the global one
    clip_value: BoolArray  # clip mode "value": the threshold bounds elements, not norms
    lr: FloatArray  # NaN when not reported
    loss: FloatArray  # the reported loss (possibly Keras' running mean), NaN when not reported
    clip_scale: FloatArray
    skipped: BoolArray
    bn: FloatArray  # (n, bn layers, len(BN_FIELDS)), NaN rows where a step had no BN report
    bn_present: BoolArray
    #: (n, variables) ‖Δw‖/‖w‖, NaN where a step did not report it.
    update_ratio: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @classmethod
    def from_records(cls, records: list[StepRecord], n_vars: int, n_bn: int) -> StepBatch:
        # A frame holds 1-8 records, so numpy's per-call overhead, not the values, is most of the cost:
        # fields are converted in groups (numpy reads None as NaN and parses the wire's "NaN"/"Infinity"),
        # and the NaN/Inf counts, all zero on healthy steps, are only converted when one is not.
        n = len(records)
        ints = np.array([(r.step, r.weight_nonfinite, r.clipped, r.skipped) for r in records], dtype=np.int64).reshape(
            n, 4
        )
        floats = np.array(
            [(r.global_norm, r.clip_threshold, r.clip_scale, r.lr, r.loss) for r in records], dtype=np.float64
        ).reshape(n, 5)
        if any(any(r.grad_nan) or any(r.grad_inf) for r in records):
            nan = np.asarray([r.grad_nan for r in records], dtype=np.int64).reshape(n, n_vars)
            inf = np.asarray([r.grad_inf for r in records], dtype=np.int64).reshape(n, n_vars)
        else:
            nan = np.zeros((n, n_vars), dtype=np.int64)
            inf = np.zeros((n, n_vars), dtype=np.int64)
        bn = np.full((n, n_bn, len(BN_FIELDS)), np.nan)
        present = np.fromiter((bool(r.bn) for r in records), dtype=bool, count=n) if n_bn else np.zeros(n, bool)
        if present.any():
            bn[present] = np.asarray([r.bn for r in records if r.bn], dtype=np.float64)
        return cls(
            step=ints[:, 0],
            global_norm=floats[:, 0],
            grad=_floats([r.grad_norm for r in records], n_vars),
            nan=nan,
            inf=inf,
            loss_nonfinite=np.fromiter((r.loss_nonfinite for r in records), dtype=bool, count=n),
            weight_nonfinite=ints[:, 1],
            clipped=ints[:, 2] != 0,
            clip_threshold=floats[:, 1],
            clip_per_variable=np.fromiter((r.clip_mode == "norm" for r in records), dtype=bool, count=n),
            clip_value=np.fromiter((r.clip_mode == "value" for r in records), dtype=bool, count=n),
            lr=floats[:, 3],
            loss=floats[:, 4],
            clip_scale=floats[:, 2],
            skipped=ints[:, 3] != 0,
            bn=bn,
            bn_present=present,
            update_ratio=_ratios(records, n_vars),
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
    if not flags.any():  # the usual, healthy case: every run is broken, nothing carries over
        return np.zeros(flags.shape, dtype=np.int64), np.zeros(flags.shape[1], dtype=np.int64)
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
            self.data[:] = rows[-self.size :]
            self.pos, self.filled = 0, self.size
            return
        k = rows.shape[0]
        end = self.pos + k
        if end <= self.size:
            self.data[self.pos : end] = rows
        else:
            cut = self.size - self.pos
            self.data[self.pos :] = rows[:cut]
            self.data[: k - cut] = rows[cut:]
        self.pos = end % self.size
        self.filled = min(self.size, self.filled + k)

    def rows(self) -> FloatArray:
        return self.data if self.filled == self.size else self.data[: self.filled]

    def median(self) -> FloatArray:
        return column_median(self.rows())


def column_median(a: FloatArray) -> FloatArray:
    """``np.median(a, axis=0)``, bit for bit, at a third of its cost on small arrays.

    np.median spends most of its time in generic argument handling; this is its algorithm (one
    partition, the middle value or the mean of the two middle values) without it. An empty ``a`` or
    one with a NaN goes through np.median itself.
    """
    if not a.shape[0] or np.isnan(a).any():
        return np.asarray(np.median(a, axis=0))
    k = a.shape[0] // 2
    if a.shape[0] % 2:
        return np.asarray(np.partition(a, k, axis=0)[k])
    part = np.partition(a, (k - 1, k), axis=0)
    return np.asarray((part[k - 1] + part[k]) / 2)
