"""The layer rules: dead ReLU units (from probes) and frozen BatchNormalization (steps and probes).

Both raise one alert per affected layer, so a hit's ``key`` is its layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gradwatch.protocol import Probe, decode_float

from .params import RuleSettings
from .rules import Evidence, Hit, Rule, RunInfo
from .series import MEAN_DELTA, VAR_DELTA, StepBatch, first_at_least, run_lengths


def _probe_values(values: Mapping[str, float | str]) -> dict[str, float]:
    return {k: decode_float(v) for k, v in values.items()}


class _ProbeCounter:
    """Consecutive probes above a threshold, per layer."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}

    def update(self, values: dict[str, float], above: float) -> dict[str, int]:
        for layer, v in values.items():
            self.runs[layer] = self.runs.get(layer, 0) + 1 if v > above else 0
        return self.runs


class DeadRelu(Rule):
    kind = "dead_relu"

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.counter = _ProbeCounter()

    def observe_probe(self, probe: Probe) -> list[Hit]:
        values = _probe_values(probe.dead_relu)
        threshold = self.p["threshold"]
        runs = self.counter.update(values, threshold)
        need = int(self.p["sustain"])
        hits = []
        for layer, v in values.items():
            if runs[layer] >= need:
                evidence: Evidence = {"dead_share": round(v, 4), "threshold": threshold, "probes": runs[layer]}
                hits.append(Hit(self.kind, probe.step, probe.step, layer, [layer], evidence, key=layer))
        return hits


class FrozenBatchnorm(Rule):
    """Moving statistics that never move while gamma/beta train, or a probe gap that stays large."""

    kind = "frozen_batchnorm"

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
            self._param_index[b, :len(idx)] = idx
            self._param_present[b, :len(idx)] = True
        self._has_params = self._param_present.any(axis=1)
        self.carry = np.zeros(len(run.bn_layers), dtype=np.int64)
        self.gaps = _ProbeCounter()

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
            training = np.asarray(above.all(axis=2) & self._has_params)
        runs, self.carry = run_lengths(still & training, self.carry)
        need = int(self.p["sustain"])
        reached, at = first_at_least(runs, need)
        hits = []
        for b in np.flatnonzero(reached).tolist():
            layer = self.run.bn_layers[b]
            first = int(rows[int(at[b])])
            last = int(rows[int(np.flatnonzero(runs[:, b] >= need)[-1])])
            evidence: Evidence = {
                "rule": "moving_statistics",
                "moving_mean_delta": float(batch.bn[last, b, MEAN_DELTA]),
                "moving_variance_delta": float(batch.bn[last, b, VAR_DELTA]),
                "eps": eps, "sustained_steps": int(runs[:, b].max()),
                "gamma_beta_grad_norm": float(batch.grad[last, self.params_of[b]].max()),
            }
            hits.append(Hit(self.kind, int(batch.step[first]), int(batch.step[last]), layer, [layer], evidence,
                            key=layer))
        return hits

    def observe_probe(self, probe: Probe) -> list[Hit]:
        if probe.step < self.p["gap_min_step"]:
            return []
        values = _probe_values(probe.bn_gap)
        threshold = self.p["gap_threshold"]
        runs = self.gaps.update(values, threshold)
        need = int(self.p["gap_sustain"])
        hits = []
        for layer, v in values.items():
            if runs[layer] >= need:
                evidence: Evidence = {"rule": "probe_gap", "bn_gap": round(v, 4), "gap_threshold": threshold,
                                      "probes": runs[layer]}
                hits.append(Hit(self.kind, probe.step, probe.step, layer, [layer], evidence, key=layer))
        return hits
