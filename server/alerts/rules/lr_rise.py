"""The learning rate's rise above its recent low: named as a cause by the exploding and non-finite rules."""

from __future__ import annotations

import numpy as np

from ..series import StepBatch
from ..spec import Evidence


class LrRise:
    """Follows the learning rate: how far it rose above its recent low (the low forgets after ``window`` steps)."""

    def __init__(self, window: float, rise: float) -> None:
        self.window, self.rise = window, rise
        self.low: tuple[float, int] | None = None  # the lowest learning rate seen recently, and its step

    def follow(self, batch: StepBatch, upto: int) -> Evidence:
        """Evidence of a rise of at least ``rise``x at row ``upto`` (empty if none), following rows up to it."""
        lr, steps = batch.lr[: upto + 1], batch.step[: upto + 1]
        ok = np.isfinite(lr) & (lr > 0)
        if not ok.any():
            return {}
        if (
            self.low is not None
            and ok.all()
            and float(lr.min()) >= self.low[0]
            and int(steps[-1]) - self.low[1] <= self.window
        ):
            pass  # the usual case: nothing lower, the low still recent
        else:
            for value, step in zip(lr[ok].tolist(), steps[ok].tolist(), strict=True):
                if self.low is None or value < self.low[0] or step - self.low[1] > self.window:
                    self.low = (value, step)
        if self.low is None or not ok[-1]:
            return {}
        rise = float(lr[-1]) / self.low[0]
        if rise < self.rise:
            return {}
        return {"lr": float(lr[-1]), "lr_rise": round(rise, 3), "lr_since_step": self.low[1]}
