"""The ``nonfinite`` rule: NaN or Inf in the gradients, the loss or the weights."""

from __future__ import annotations

import numpy as np

from .. import texts
from ..series import StepBatch, run_lengths
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo
from .lr_rise import LrRise


class Nonfinite(Rule):
    """Any NaN or Inf in the gradients, the loss or the weights.

    A step the mixed-precision loss scaler skipped (skipped with the trainer's guard off) is the scaler
    doing its job: information, unless it skips ``scaler_sustain`` steps in a row. The learning rate is
    followed so that the alert can say when it ran away before the first bad step.
    """

    spec = KindSpec(
        kind="nonfinite",
        severity="critical",
        clear_steps=50,
        params={
            "scaler_sustain": whole(
                6,
                1,
                100_000,
                "consecutive steps the mixed-precision loss scaler skips before its "
                "overflows are critical (fewer are information: the scaler handles them)",
            ),
            "lr_rise": real(
                10.0,
                1.0,
                1e12,
                "a learning rate this many times its recent low before the first bad step is named as the cause",
            ),
            "lr_window": whole(500, 1, 10**9, "steps over which the learning rate's low is remembered"),
        },
        remedies=(
            "Check the inputs and labels for NaN/Inf (e.g. log of zero or negative values in preprocessing).",
            "Lower the learning rate and clip gradients.",
            "Use numerically safe ops: from_logits=True losses, epsilon in divisions, log and sqrt.",
            "Enable the trainer's non-finite guard (guard_nonfinite) so a bad batch skips its update "
            "instead of poisoning every weight.",
        ),
        message=texts.nonfinite,
        advise=texts.nonfinite_remedies,
    )

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.skipped = 0
        self.scaler_skips = 0
        self.scaler_carry = np.zeros(1, dtype=np.int64)
        self.lr = LrRise(self.p["lr_window"], self.p["lr_rise"])

    def observe(self, batch: StepBatch) -> list[Hit]:
        self.skipped += int(batch.skipped.sum())
        bad_grad = (batch.nan + batch.inf) > 0
        grad_rows = bad_grad.any(axis=1) | ~np.isfinite(batch.global_norm)
        loss_rows = batch.loss_nonfinite
        rows = grad_rows | loss_rows | (batch.weight_nonfinite > 0)
        where = np.flatnonzero(rows)
        if not where.size:
            if len(batch):
                self.lr.follow(batch, len(batch) - 1)
                self.scaler_carry[:] = 0
            return []
        # The scaler's overflow: a skipped step (guard off) with finite weights and a finite loss (a NaN loss
        # is no overflow of the scaled gradients).
        scaler = (
            rows & batch.skipped & (batch.weight_nonfinite == 0) & ~loss_rows
            if not self.run.guard_nonfinite
            else np.zeros_like(rows)
        )
        self.scaler_skips += int(scaler.sum())
        runs, self.scaler_carry = run_lengths(scaler[:, None], self.scaler_carry)
        persistent = runs[:, 0] >= self.p["scaler_sustain"]
        real = np.flatnonzero(rows & (~scaler | persistent))
        if not real.size:  # only overflows the loss scaler handled: say so, quietly
            r = int(where[0])
            evidence: Evidence = {
                "rule": "loss_scale",
                "scaler_skips": self.scaler_skips,
                "scaler_sustain": self.p["scaler_sustain"],
            }
            return [
                Hit(
                    self.kind,
                    int(batch.step[r]),
                    int(batch.step[int(where[-1])]),
                    None,
                    [],
                    evidence,
                    key="loss_scale",
                    severity="info",
                )
            ]
        r = int(real[0])
        cols = np.flatnonzero(bad_grad[r]).tolist()
        if not cols:  # counts missing: fall back to the norms themselves
            cols = np.flatnonzero(~np.isfinite(batch.grad[r])).tolist()
        names = [self.run.variables[c] for c in cols]
        evidence = {
            "grad_nan": int(batch.nan[r].sum()),
            "grad_inf": int(batch.inf[r].sum()),
            "loss_nonfinite": int(bool(loss_rows[r])),
            "weight_nonfinite": int(batch.weight_nonfinite[r]),
            "variables_affected": len(names),
            "nonfinite_steps": int(real.size),
        }
        evidence.update(self.lr.follow(batch, r))
        if scaler[r]:
            evidence.update(
                {
                    "rule": "loss_scale_persistent",
                    "scaler_skips": self.scaler_skips,
                    "consecutive_skips": int(runs[r, 0]),
                }
            )
        elif self.run.guard_nonfinite:
            evidence["skipped_steps"] = self.skipped
        return [
            Hit(
                self.kind,
                int(batch.step[r]),
                int(batch.step[int(real[-1])]),
                names[0] if names else None,
                names,
                evidence,
            )
        ]
