"""A leading rule: a run heading for divergence under a learning rate that keeps growing.

Under a runaway learning rate the updates grow as a share of the weights step after step, long before the
gradients or the loss show anything. ``Diverging`` follows, per reported step, the learning rate and the
update-to-weight ratio ‖Δw‖/‖w‖ (the median over the weight matrices, which every layer's update moves)
over the last ``window`` steps, and warns when:

- the learning rate grew by ``lr_growth`` or more on every step of the window (a restart's one jump is no
  runaway), and *steadily*: its growth on the window's last step is at least ``lr_steady`` of that on its
  first (a linear warm-up or a ramp slows down as it nears its target; a runaway does not);
- the update ratio has grown by ``ratio_growth`` or more per step over the window, to at least
  ``ratio_level`` (updates that are a negligible share of the weights threaten nothing yet);

for ``sustain`` reported steps in a row. The rule is evaluated row by row, so how the steps were framed on
the wire does not change its verdict.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from itertools import pairwise

import numpy as np

from .. import texts
from ..series import StepBatch
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo, kernel_indices


class Diverging(Rule):
    spec = KindSpec(
        kind="diverging",
        severity="warning",
        clear_steps=20,  # four windows: the learning rate has stopped its steady climb
        params={
            "window": whole(
                5, 2, 10_000, "reported steps over which the learning rate's and the update ratio's growth are measured"
            ),
            "lr_growth": real(
                1.04, 1.0, 100.0, "the learning rate grew at least this much on every step of the window"
            ),
            "lr_steady": real(
                0.9,
                0.0,
                10.0,
                "... and its growth on the window's last step is at least this share of that "
                "on its first (a warm-up slows down as it nears its target)",
            ),
            "ratio_growth": real(
                1.02,
                1.0,
                100.0,
                "the update-to-weight ratio (median over the weight matrices) grew at "
                "least this much per step over the window",
            ),
            "ratio_level": real(2e-3, 0.0, 10.0, "... to at least this share of the weights per step"),
            "sustain": whole(2, 1, 1000, "consecutive reported steps all of it holds"),
        },
        remedies=(
            "Lower the learning rate (set_lr from the page), or stop the warm-up or schedule that keeps raising it.",
            "Clip gradients (a global-norm clip threshold) to bound each update while you do.",
        ),
        message=texts.diverging,
    )

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.kernels = np.asarray(kernel_indices(run.variables), dtype=np.intp)
        self.window = int(self.p["window"])
        #: (step, lr, ratio) of the last reported steps that had both, oldest first.
        self.points: deque[tuple[int, float, float]] = deque(maxlen=self.window + 1)
        self.run_length = 0
        self.since: int | None = None

    def observe(self, batch: StepBatch) -> list[Hit]:
        if not len(batch) or not self.kernels.size or batch.update_ratio.shape[1] == 0:
            return []
        kernel_ratios = batch.update_ratio[:, self.kernels]
        usable = np.isfinite(kernel_ratios) & (kernel_ratios > 0)
        rows = np.flatnonzero(usable.any(axis=1) & np.isfinite(batch.lr) & (batch.lr > 0))
        if not rows.size:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(np.where(usable[rows], kernel_ratios[rows], np.nan), axis=1).tolist()
        found: Hit | None = None
        last_row = -1
        for r, ratio in zip(rows.tolist(), medians, strict=True):
            step, lr = int(batch.step[r]), float(batch.lr[r])
            self.points.append((step, lr, ratio))
            evidence = self._check()
            if evidence is None:
                self.run_length = 0
                continue
            self.run_length += 1
            if self.run_length == 1:
                self.since = step
            if self.run_length < self.p["sustain"]:
                continue
            last_row = r
            if found is None:
                evidence["since_step"] = self.since
                evidence["sustained_steps"] = self.run_length
                found = Hit(self.kind, step, step, None, [], evidence)
        if found is not None:
            found.last_step = int(batch.step[last_row])
        return [found] if found is not None else []

    def _check(self) -> Evidence | None:
        """Evidence that the window shows a steady runaway (None when it does not)."""
        if len(self.points) <= self.window:
            return None
        points = list(self.points)
        s0, _, r0 = points[0]
        s1, lr1, r1 = points[-1]
        if r1 < self.p["ratio_level"] or s1 <= s0:
            return None
        # Every step of the window raised the learning rate (a restart's single jump is no runaway) ...
        rates = [math.log(b[1] / a[1]) / (b[0] - a[0]) for a, b in pairwise(points) if b[0] > a[0]]
        if not rates or min(rates) < math.log(self.p["lr_growth"]):
            return None
        # ... and by as much at its end as at its start (a warm-up's ramp slows down as it nears its target).
        if rates[-1] < self.p["lr_steady"] * rates[0]:
            return None
        ratio_rate = math.log(r1 / r0) / (s1 - s0)
        if ratio_rate < math.log(self.p["ratio_growth"]):
            return None
        lr_rate = sum(rates) / len(rates)
        return {
            "rule": "runaway_lr",
            "update_ratio": r1,
            "update_ratio_growth": round(math.exp(ratio_rate), 4),
            "lr": lr1,
            "lr_growth": round(math.exp(lr_rate), 4),
            "window": s1 - s0,
        }
