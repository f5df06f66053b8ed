"""The ``frozen_batchnorm`` rule: BatchNormalization moving statistics that never move, or a probe gap that stays."""

from __future__ import annotations

import numpy as np

from gradwatch.protocol import Probe

from .. import texts
from ..series import MEAN_DELTA, MEAN_MAX, MEAN_MIN, VAR_DELTA, VAR_MAX, VAR_MIN, IntArray, StepBatch, run_lengths
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo
from .probe import ProbeCounter, probe_values


class FrozenBatchnorm(Rule):
    """Moving statistics that never move while gamma/beta train, or a probe gap that stays large."""

    spec = KindSpec(
        kind="frozen_batchnorm",
        severity="warning",
        clear_steps=200,  # BatchNorm statistics are sampled, not reported on every step
        params={
            "eps": real(1e-8, 0.0, 1.0, "moving-mean and moving-variance RMS changes below eps count as frozen"),
            "grad_eps": real(0.0, 0.0, 1e6, "gamma/beta gradient norms above grad_eps count as training"),
            "sustain": whole(20, 1, 100_000, "consecutive BN-reporting steps frozen while gamma/beta train"),
            "untouched_min_step": whole(
                1,
                0,
                10**9,
                "from this step on, one sample with every moving mean exactly 0 and "
                "variance exactly 1 (never updated) while gamma/beta train raises it",
            ),
            "gap_threshold": real(1.0, 0.0, 1e6, "probe bn_gap above which a layer's moving statistics are off"),
            "gap_sustain": whole(3, 1, 1000, "consecutive probes with bn_gap above gap_threshold"),
            "gap_min_step": whole(
                500,
                0,
                10**9,
                "probes before this step are ignored (moving statistics still warm up; "
                "Keras' momentum 0.99 needs a few hundred steps)",
            ),
        },
        remedies=(
            texts.TRAINING_TRUE,
            "If the layer is frozen on purpose (fine-tuning), also make gamma/beta non-trainable.",
            "Check the BatchNormalization momentum is not 1.0.",
        ),
        message=texts.frozen_batchnorm,
    )

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        index = {v: i for i, v in enumerate(run.variables)}
        self.params_of: list[list[int]] = [
            [index[f"{layer}/{name}"] for name in ("gamma", "beta") if f"{layer}/{name}" in index]
            for layer in run.bn_layers
        ]
        # The same as (bn layers, 2) index arrays, so one gather checks every layer's gamma/beta at once
        # (a Python loop over MobileNetV2's 52 layers cost ~0.4 ms per record). Padding points at
        # column 0 and is masked out by ``_param_present``.
        self._param_index = np.zeros((len(run.bn_layers), 2), dtype=np.intp)
        self._param_present = np.zeros((len(run.bn_layers), 2), dtype=bool)
        for b, idx in enumerate(self.params_of):
            self._param_index[b, : len(idx)] = idx
            self._param_present[b, : len(idx)] = True
        self._has_params = self._param_present.any(axis=1)
        # Layers the model runs in inference mode on purpose (fine-tuning) are never frozen by mistake.
        self._judged = np.asarray([layer not in run.bn_inference for layer in run.bn_layers], dtype=bool)
        self.carry = np.zeros(len(run.bn_layers), dtype=np.int64)
        self.gaps = ProbeCounter()

    def checked_steps(self, batch: StepBatch) -> IntArray:
        return batch.step[batch.bn_present]  # moving statistics are judged where they were sampled

    def observe(self, batch: StepBatch) -> list[Hit]:
        if not self.run.bn_layers or not batch.bn_present.any():
            return []
        rows = np.flatnonzero(batch.bn_present)
        bn = batch.bn[rows]
        eps = self.p["eps"]
        with np.errstate(invalid="ignore"):
            still = (bn[:, :, MEAN_DELTA] < eps) & (bn[:, :, VAR_DELTA] < eps)
        if not still.any():  # the usual case: every layer's statistics moved, so every run breaks here
            self.carry = np.zeros_like(self.carry)
            return []
        # A layer trains when all its gamma/beta gradient norms exceed grad_eps (NaN does not);
        # a layer without either variable never counts as training.
        training = np.zeros_like(still)
        if self._has_params.any():
            grads = batch.grad[rows][:, self._param_index]  # (rows, bn layers, 2)
            with np.errstate(invalid="ignore"):
                above = (grads > self.p["grad_eps"]) | ~self._param_present
            training = np.asarray(above.all(axis=2) & self._has_params & self._judged)
        runs, self.carry = run_lengths(still & training, self.carry)
        need = int(self.p["sustain"])
        # Statistics still exactly at their initial values (every moving mean 0, every variance 1) after
        # steps in which gamma/beta trained: no training-mode call ever updated them. One sample says so,
        # so a run that diverges within its first steps still gets the cause named.
        with np.errstate(invalid="ignore"):
            untouched = (
                (bn[:, :, MEAN_MIN] == 0)
                & (bn[:, :, MEAN_MAX] == 0)
                & (bn[:, :, VAR_MIN] == 1)
                & (bn[:, :, VAR_MAX] == 1)
                & (batch.step[rows] >= self.p["untouched_min_step"])[:, None]
            )
        fires = (runs >= need) | (untouched & still & training)
        hits = []
        for b in np.flatnonzero(fires.any(axis=0)).tolist():
            layer = self.run.bn_layers[b]
            first = int(rows[int(np.flatnonzero(fires[:, b])[0])])
            last = int(rows[int(np.flatnonzero(fires[:, b])[-1])])
            evidence: Evidence = {
                "rule": "moving_statistics",
                "moving_mean_delta": float(batch.bn[last, b, MEAN_DELTA]),
                "moving_variance_delta": float(batch.bn[last, b, VAR_DELTA]),
                "eps": eps,
                "sustained_steps": int(runs[:, b].max()),
                "gamma_beta_grad_norm": float(batch.grad[last, self.params_of[b]].max()),
                "untouched": int(bool(untouched[:, b].any())),
            }
            hits.append(
                Hit(self.kind, int(batch.step[first]), int(batch.step[last]), layer, [layer], evidence, key=layer)
            )
        return hits

    def observe_probe(self, probe: Probe) -> list[Hit]:
        if probe.step < self.p["gap_min_step"]:
            return []
        values = {k: v for k, v in probe_values(probe.bn_gap).items() if k not in self.run.bn_inference}
        threshold = self.p["gap_threshold"]
        runs = self.gaps.update(values, threshold)
        need = int(self.p["gap_sustain"])
        hits = []
        for layer, v in values.items():
            if runs[layer] >= need:
                evidence: Evidence = {
                    "rule": "probe_gap",
                    "bn_gap": round(v, 4),
                    "gap_threshold": threshold,
                    "probes": runs[layer],
                }
                hits.append(Hit(self.kind, probe.step, probe.step, layer, [layer], evidence, key=layer))
        return hits
