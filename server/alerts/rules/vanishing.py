"""The ``vanishing_gradients`` rule: earlier kernels starved of gradient, beside the last one."""

from __future__ import annotations

import numpy as np

from .. import texts
from ..series import StepBatch, first_at_least, run_lengths
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo, kernel_indices


class VanishingGradients(Rule):
    """Earlier kernels' gradient norms far below the last kernel's, for many steps in a row.

    Vanishing is a chain effect, so the first kernel (the farthest from the loss) must be among the starved:
    an attention query/key kernel that learns slowly in the middle of a healthy transformer is not it. A
    gradient of exactly zero is a dead or disconnected layer (``dead_relu``), not a vanishing one.
    The reference is the output layer's largest gradient norm, its bias included: the bias gradient is the
    error signal itself, so a network whose signal vanished in both directions (tiny initial weights shrink
    the last kernel's gradient too) is still seen.
    """

    spec = KindSpec(
        kind="vanishing_gradients",
        severity="warning",
        clear_steps=100,
        params={
            "ratio": real(
                1e-3, 1e-12, 1.0, "an earlier kernel's gradient norm below ratio x the last kernel's is starved"
            ),
            "sustain": whole(30, 1, 100_000, "consecutive reported steps a variable must stay starved"),
        },
        remedies=(
            "Use He (for ReLU) or Xavier/Glorot initialisation.",
            "Use ReLU-family activations (ReLU, LeakyReLU, ELU, GELU) instead of sigmoid/tanh in hidden layers.",
            "Add BatchNormalization between layers.",
            "Add residual (skip) connections, or make the network shallower.",
        ),
        message=texts.vanishing,
    )

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.kernels = kernel_indices(run.variables)
        out_layer = run.variables[self.kernels[-1]].rsplit("/", 1)[0] if self.kernels else None
        self.output = [i for i, v in enumerate(run.variables) if v.rsplit("/", 1)[0] == out_layer]
        self.carry = np.zeros(max(0, len(self.kernels) - 1), dtype=np.int64)

    def observe(self, batch: StepBatch) -> list[Hit]:
        if len(self.kernels) < 2 or not len(batch):
            return []
        last = np.max(batch.grad[:, self.output], axis=1)
        early = batch.grad[:, self.kernels[:-1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = early / last[:, None]
        usable = np.isfinite(last) & (last > 0)
        starved = (ratios < self.p["ratio"]) & np.isfinite(early) & (early > 0) & usable[:, None]
        starved &= starved[:, :1]  # only while the first kernel is starved
        runs, self.carry = run_lengths(starved, self.carry)
        need = int(self.p["sustain"])
        reached, at = first_at_least(runs, need)
        if not reached.any():
            return []
        cols = np.flatnonzero(reached)
        row = int(at[cols].min())
        last_row = int(np.flatnonzero((runs[:, cols] >= need).any(axis=1))[-1])
        names = [self.run.variables[self.kernels[c]] for c in cols.tolist()]
        c0 = int(cols[0])  # earliest starved kernel in model order
        ref = self.output[int(np.nanargmax(batch.grad[last_row, self.output]))]
        evidence: Evidence = {
            "ratio": float(ratios[last_row, c0]),
            "threshold": self.p["ratio"],
            "sustained_steps": int(runs[last_row, c0]),
            "layer_norm": float(early[last_row, c0]),
            "last_layer": self.run.variables[ref],
            "last_layer_norm": float(last[last_row]),  # the output layer's largest: kernel or bias
            "since_step": int(batch.step[row]) - need + 1,
        }
        return [Hit(self.kind, int(batch.step[row]), int(batch.step[last_row]), names[0], names, evidence)]
