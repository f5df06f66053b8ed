"""The update-to-weight ratio ‖w_after − w_before‖ / ‖w_before‖ per variable, measured on the host.

The host keeps a copy of the weights just before a measured step and compares
after it: every ``every``-th step, or by default paced by its own cost (two reads
of every weight) to at most ``BUDGET`` of wall time, and at most every
``MIN_STEPS`` steps. Measured in the compiled step instead, the optimizer's update
would have to sit in a branch (update and measure, or only update), and that
branch cost every step more than the measurement costs every ``every``-th.
Only a clean pair counts: when several steps run between two host calls (one
execution of ``steps_per_execution > 1``) nothing is measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .pacing import Pacer
from .readback import FlatReader


class UpdateRatio:
    """``keep(next_step)`` before a step, ``measure(step)`` after it."""

    #: Paced (``every=None``): at most this share of wall time...
    BUDGET = 0.005
    #: ... and at most every this many steps.
    MIN_STEPS = 10

    def __init__(self, variables: Sequence[Any], every: int | None) -> None:
        self.variables = list(variables)
        self.reader = FlatReader(self.variables)
        self.every = every
        self.pacer = Pacer(self.BUDGET, min_calls=self.MIN_STEPS) if every is None else None
        self._before: tuple[int, np.ndarray] | None = None
        self._kept_in = 0.0  # seconds the last keep() took

    def _due(self, next_step: int) -> bool:
        if self.every is None:
            return self.pacer is not None and self.pacer.due(time.monotonic())
        return self.every > 0 and next_step % self.every == 0

    def keep(self, next_step: int) -> None:
        """Call just before step ``next_step`` runs; copies the weights if that step is measured."""
        if self._due(next_step):
            start = time.perf_counter()
            self._before = (next_step, self.reader.read())
            self._kept_in = time.perf_counter() - start

    def measure(self, step: int) -> np.ndarray | None:
        """Call right after ``step``: the ratio per variable (NaN for an all-zero weight), if kept."""
        before, self._before = self._before, None
        if before is None or before[0] != step:
            return None
        start = time.perf_counter()
        b = before[1]
        delta = self.reader.read() - b
        size = np.sqrt(self.reader.per_variable(np.add, np.square(b, dtype=np.float64)))
        moved = np.sqrt(self.reader.per_variable(np.add, np.square(delta, dtype=np.float64)))
        with np.errstate(divide="ignore", invalid="ignore"):
            # undefined (NaN) for an all-zero weight, such as a bias at its initial zeros
            ratios = np.where(size > 0, moved / np.where(size > 0, size, 1.0), np.nan)
        if self.pacer is not None:
            self.pacer.took(time.monotonic(), self._kept_in + time.perf_counter() - start)
        return ratios
