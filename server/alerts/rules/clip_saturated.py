"""The ``clip_saturated`` rule: nearly every recent step clipped, so clipping acts as a lower learning rate."""

from __future__ import annotations

import numpy as np

from .. import texts
from ..series import StepBatch
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo


class ClipSaturated(Rule):
    """Nearly every recent step clipped: clipping has become a lower learning rate."""

    spec = KindSpec(
        kind="clip_saturated",
        severity="warning",
        clear_steps=100,  # the default window
        params={
            "fraction": real(0.9, 0.01, 1.0, "share of the last window steps that were clipped"),
            "window": whole(100, 2, 100_000, "steps considered (the rule waits for this many)"),
            "max_scale": real(
                0.2,
                0.0,
                1.0,
                "the median clip scale of the clipped steps must be at most this (clipping "
                "shrinks them 5x or more); 1.0: any clipping counts",
            ),
        },
        remedies=(
            "Raise the clip threshold (set_clip) toward the typical global norm, or lower the learning rate "
            "(set_lr) explicitly, so clipping only catches outliers.",
            "Look for the cause of the large gradients (scale of inputs or loss, initialisation).",
        ),
        message=texts.clip_saturated,
    )

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.window = int(self.p["window"])
        self.history = np.zeros(0, dtype=bool)
        self.scales = np.zeros(0)

    def observe(self, batch: StepBatch) -> list[Hit]:
        w = self.window
        before = self.history.size
        history = np.concatenate([self.history, batch.clipped])
        scales = np.concatenate([self.scales, batch.clip_scale])
        if not history.any() and self.p["fraction"] > 0:  # nothing clipped in the window: the share is 0
            self.history, self.scales = history[-w:], scales[-w:]
            return []
        counts = np.cumsum(history)
        lagged = np.concatenate([np.zeros(w, dtype=np.int64), counts])[: counts.size]
        share = (counts - lagged) / w
        self.history, self.scales = history[-w:], scales[-w:]
        idx = np.arange(before, history.size)
        fire = idx[(idx + 1 >= w) & (share[idx] >= self.p["fraction"])]
        if not fire.size:
            return []
        r, last = int(fire[0]), int(fire[-1])
        window_scales = scales[max(0, last + 1 - w) : last + 1]
        # Clipping that trims steps a little (a deliberate clipnorm=1 on an LSTM) is the user's choice;
        # it becomes a hidden learning-rate cut when it shrinks the typical step by max_scale or more.
        clipped_scales = window_scales[history[max(0, last + 1 - w) : last + 1]]
        if clipped_scales.size and not float(np.nanmedian(clipped_scales)) <= self.p["max_scale"]:
            return []
        evidence: Evidence = {
            "clipped_share": round(float(share[last]), 4),
            "fraction": self.p["fraction"],
            "window": w,
            "median_clip_scale": float(np.nanmedian(window_scales)) if window_scales.size else None,
            "clip_threshold": float(batch.clip_threshold[last - before]),
        }
        return [Hit(self.kind, int(batch.step[r - before]), int(batch.step[last - before]), None, [], evidence)]
