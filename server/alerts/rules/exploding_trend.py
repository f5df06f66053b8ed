"""The early signals of ``exploding_gradients``: the global norm's ``growth`` and its ``trend``, row by row.

Both need no usual level of their own (growth none at all), so they can warn before the spike rule's warm-up ends.
``GrowthTrend`` keeps their rolling state for one run and says at which row either fired and with what evidence;
``ExplodingGradients`` turns that into its hit.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from itertools import pairwise

import numpy as np

from ..series import BoolArray, StepBatch
from ..spec import Evidence

#: Steps in the running median of the log global norm (one ragged batch is not a trend).
SMOOTH = 5
#: The trend windows: (steps, parts the window is cut into, each of which must carry its share of the rise).
TRENDS = ((10, 2), (20, 3))


def median_of(values: list[float]) -> float:
    """The median of a handful of floats (np.median costs ~50 us of argument handling on five values)."""
    v = sorted(values)
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2


class GrowthTrend:
    """The ``growth`` and ``trend`` rules' state: recent log global norms, their running medians, recent losses."""

    def __init__(self) -> None:
        keep = max(w for w, _ in TRENDS) + SMOOTH + 1
        self.logs: deque[float] = deque(maxlen=keep)  # the last finite log global norms
        self.smooth: deque[float] = deque(maxlen=keep)  # their running medians
        self.trend_run = 0
        self.growth_run = 0
        self.trend_losses: deque[float] = deque(maxlen=SMOOTH)
        self.falling = False  # the loss is still falling (as of the last finite row)

    def scan(
        self,
        p: Mapping[str, float],
        batch: StepBatch,
        finite: BoolArray,
        usual: float | None,
        usual_loss: float,
        seen: int,
    ) -> tuple[int, str, Evidence] | None:
        """(row, rule, evidence) of the first row of ``batch`` at which growth or trend fired, following every row.

        ``usual``: the global norm's usual level (``None`` before there is one); ``usual_loss``: the loss's (NaN
        before the warm-up); ``seen``: finite rows before this batch (the trend waits for the warm-up).
        """
        factor, steps_needed = math.log(p["growth_factor"]), int(p["growth_steps"])
        growth_total = math.log(p["growth_total"])
        rises = {10: math.log(p["trend_rise"]), 20: math.log(p["trend_rise_long"])}
        level = math.log(p["trend_level"] * usual) if usual is not None else math.inf
        found: tuple[int, str, Evidence] | None = None
        with np.errstate(divide="ignore"):
            logs = np.log(batch.global_norm)
        for r in np.flatnonzero(finite & np.isfinite(logs)).tolist():
            x = float(logs[r])
            if math.isfinite(batch.loss[r]):
                self.trend_losses.append(float(batch.loss[r]))
            prev = self.logs[-1] if self.logs else None
            self.logs.append(x)
            self.smooth.append(median_of([self.logs[-i] for i in range(1, min(SMOOTH, len(self.logs)) + 1)]))
            self.growth_run = self.growth_run + 1 if prev is not None and x - prev >= factor else 0
            if found is not None:
                continue
            total = x - self.logs[-1 - min(self.growth_run, len(self.logs) - 1)] if self.growth_run else 0.0
            if self.growth_run >= steps_needed and total >= growth_total:
                found = (
                    r,
                    "growth",
                    {
                        "growth_steps": self.growth_run,
                        "rise": round(math.exp(total), 3),
                        "since_step": int(batch.step[r]) - self.growth_run,
                    },
                )
                continue
            # A norm that grows while the loss keeps falling is a model learning (gradient norms often grow
            # several-fold early in training), not one diverging.
            falling = (
                usual_loss > 0
                and bool(self.trend_losses)
                and median_of(list(self.trend_losses)) < p["trend_loss_floor"] * usual_loss
            )
            self.falling = falling
            if seen < p["warmup"] or x < level or falling:
                self.trend_run = 0
                continue
            trend = self._trend(rises)
            self.trend_run = self.trend_run + 1 if trend is not None else 0
            if trend is not None and self.trend_run >= p["trend_sustain"]:
                window, rise = trend
                found = (
                    r,
                    "trend",
                    {
                        "trend_window": window,
                        "rise": round(rise, 3),
                        "since_step": int(batch.step[r]) - window,
                        "global_norm_usual": float(usual) if usual is not None else None,
                    },
                )
        return found

    def _trend(self, rises: dict[int, float]) -> tuple[int, float] | None:
        """(window, rise) of the first window over which the smoothed log norm climbed steadily."""
        sm, n = self.smooth, len(self.smooth)
        for window, parts in TRENDS:
            if n <= window + SMOOTH:
                continue
            points = [sm[n - 1 - window + round(k * window / parts)] for k in range(parts + 1)]
            total = points[-1] - points[0]
            # Steadily: every part of the window carries its share of the rise (a step change is no trend).
            if total >= rises[window] and all(b - a >= 0.3 * total / parts for a, b in pairwise(points)):
                return window, math.exp(total)
        return None
