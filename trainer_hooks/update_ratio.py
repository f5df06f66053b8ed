"""The update-to-weight ratio ‖w_after − w_before‖ / ‖w_before‖ per variable, measured on the host.

Every ``every``-th step the host keeps a copy of the weights just before it and
compares after it. Measured in the compiled step instead, the optimizer's update
would have to sit in a branch (update and measure, or only update), and that
branch cost every step more than the measurement costs every ``every``-th.
Only a clean pair counts: when several steps run between two host calls (one
execution of ``steps_per_execution > 1``) nothing is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .readback import host_array


def _read(v: Any) -> np.ndarray:
    return np.array(host_array(v), np.float32)  # a copy: the update may reuse the buffer


class UpdateRatio:
    """``keep(next_step)`` before a step, ``measure(step)`` after it."""

    def __init__(self, variables: Sequence[Any], every: int) -> None:
        self.variables = list(variables)
        self.every = every
        self._before: tuple[int, list[np.ndarray]] | None = None

    def keep(self, next_step: int) -> None:
        """Call just before step ``next_step`` runs; copies the weights if that step is measured."""
        if self.every and next_step % self.every == 0:
            self._before = (next_step, [_read(v) for v in self.variables])

    def measure(self, step: int) -> np.ndarray | None:
        """Call right after ``step``: the ratio per variable (NaN for an all-zero weight), if kept."""
        before, self._before = self._before, None
        if before is None or before[0] != step:
            return None
        ratios = np.full(len(self.variables), np.nan)
        for i, (v, b) in enumerate(zip(self.variables, before[1])):
            size = float(np.linalg.norm(b))
            if size > 0:  # undefined for an all-zero weight (a bias at its initial zeros)
                ratios[i] = float(np.linalg.norm(np.asarray(host_array(v), np.float32) - b)) / size
        return ratios
