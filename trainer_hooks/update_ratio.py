"""The update-to-weight ratio ‖w_after − w_before‖ / ‖w_before‖ per variable, measured on the host.

By default the compiled step measures it, every step (update_capture.py). The host
does instead when asked (``update_ratio_every=N``) or when the step cannot (under a
distribution strategy, or an optimizer whose updates were not seen): it keeps a copy
of the weights just before every ``every``-th step (``FALLBACK_EVERY`` for the
latter) and compares after it. Spaced by steps, never by wall time, so the same
steps are measured however loaded the machine is. Only a clean pair counts: when
several steps run between two host calls (one execution of
``steps_per_execution > 1``) nothing is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .readback import FlatReader


class UpdateRatio:
    """``keep(next_step)`` before a step, ``measure(step)`` after it."""

    #: Steps between host measurements when the compiled step could not measure.
    FALLBACK_EVERY = 10

    def __init__(self, variables: Sequence[Any], every: int) -> None:
        self.variables = list(variables)
        self.reader = FlatReader(self.variables)
        self.every = every
        self._before: tuple[int, np.ndarray] | None = None

    def _due(self, next_step: int) -> bool:
        return self.every > 0 and next_step % self.every == 0

    def keep(self, next_step: int) -> None:
        """Call just before step ``next_step`` runs; copies the weights if that step is measured."""
        if self._due(next_step):
            self._before = (next_step, self.reader.read())

    def measure(self, step: int) -> np.ndarray | None:
        """Call right after ``step``: the ratio per variable (NaN for an all-zero weight), if kept."""
        before, self._before = self._before, None
        if before is None or before[0] != step:
            return None
        b = before[1]
        delta = self.reader.read() - b
        size = np.sqrt(self.reader.per_variable(np.add, np.square(b, dtype=np.float64)))
        moved = np.sqrt(self.reader.per_variable(np.add, np.square(delta, dtype=np.float64)))
        with np.errstate(divide="ignore", invalid="ignore"):
            # undefined (NaN) for an all-zero weight, such as a bias at its initial zeros
            ratios = np.where(size > 0, moved / np.where(size > 0, size, 1.0), np.nan)
        return ratios
