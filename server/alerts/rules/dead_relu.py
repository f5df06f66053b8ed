"""The ``dead_relu`` rule: ReLU units dead on the probe batch, or a layer whose gradients are exactly zero."""

from __future__ import annotations

import numpy as np

from gradwatch.protocol import Probe

from .. import texts
from ..series import BoolArray, StepBatch, first_at_least, run_lengths
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo, kernel_indices
from .probe import ProbeCounter, layer_of, probe_values


class DeadRelu(Rule):
    """ReLU units that output zero for every probe example, or a layer whose gradients are exactly zero.

    The probe needs data; without it the gradients still show a layer whose units all died: every one of
    its variables' gradient norms exactly 0, step after step, while the output layer's are not (a ReLU
    passes no gradient below zero, so nothing reaches its kernel or bias). The deepest such layer is named:
    the ones before it get nothing because it passes nothing back.
    """

    spec = KindSpec(
        kind="dead_relu",
        severity="warning",
        clear_steps=100,
        params={
            "threshold": real(
                0.5, 0.0, 1.0, "share of a layer's units dead on the probe batch above which it is dying"
            ),
            "sustain": whole(2, 1, 1000, "consecutive probes above the threshold"),
            "zero_sustain": whole(
                20,
                1,
                100_000,
                "consecutive steps a hidden layer's gradients are all exactly zero "
                "(while the output layer's are not): its units are dead",
            ),
        },
        remedies=(
            "Lower the learning rate (large updates push units into the always-negative region).",
            "Use LeakyReLU, ELU or GELU, which keep a gradient for negative inputs.",
            "Use He initialisation and a small positive bias initialiser.",
            "Add BatchNormalization before the activation.",
        ),
        message=texts.dead_relu,
        advise=texts.dead_relu_remedies,
    )

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.counter = ProbeCounter()
        kernels = kernel_indices(run.variables)
        last_layer = layer_of(run.variables[kernels[-1]]) if kernels else None
        layers: dict[str, list[int]] = {}
        for i, v in enumerate(run.variables):
            layers.setdefault(layer_of(v), []).append(i)
        with_kernel = {layer_of(run.variables[i]) for i in kernels}  # layers with weights (not BN's gamma/beta)
        self.layers = [name for name in layers if name != last_layer and name in with_kernel]
        self.columns = [layers[name] for name in self.layers]
        self.output = layers.get(last_layer, []) if last_layer is not None else []
        self.last = kernels[-1] if kernels else -1
        self.carry = np.zeros(len(self.layers), dtype=np.int64)

    def observe(self, batch: StepBatch) -> list[Hit]:
        if not self.layers or not self.output or not len(batch):
            return []
        zero: BoolArray = np.asarray(batch.grad == 0.0)
        if not zero.any():  # the usual case
            self.carry[:] = 0
            return []
        out = batch.grad[:, self.output]
        alive_out = np.asarray((np.isfinite(out) & (out > 0)).any(axis=1))  # the output layer still learns
        dead = np.stack([zero[:, cols].all(axis=1) for cols in self.columns], axis=1) & alive_out[:, None]
        runs, self.carry = run_lengths(dead, self.carry)
        need = int(self.p["zero_sustain"])
        reached, at = first_at_least(runs, need)
        if not reached.any():
            return []
        cols = np.flatnonzero(reached)
        c = int(cols[-1])  # the deepest dead layer
        last_row = int(np.flatnonzero(runs[:, c] >= need)[-1])
        evidence: Evidence = {
            "rule": "zero_gradients",
            "zero_steps": int(runs[last_row, c]),
            "since_step": int(batch.step[last_row]) - int(runs[last_row, c]) + 1,
            "output_layer": layer_of(self.run.variables[self.last]),
            "output_grad_norm": float(np.nanmax(batch.grad[last_row, self.output])),
        }
        layer = self.layers[c]
        evidence["activation"] = self.run.activation(layer)  # what its units have: dead ReLUs, saturated tanh...
        return [
            Hit(
                self.kind,
                int(batch.step[int(at[c])]),
                int(batch.step[last_row]),
                layer,
                [self.layers[i] for i in cols.tolist()],
                evidence,
                key=f"zero:{layer}",
            )
        ]

    def observe_probe(self, probe: Probe) -> list[Hit]:
        values = probe_values(probe.dead_relu)
        threshold = self.p["threshold"]
        runs = self.counter.update(values, threshold)
        need = int(self.p["sustain"])
        hits = []
        for layer, v in values.items():
            if runs[layer] >= need:
                evidence: Evidence = {"dead_share": round(v, 4), "threshold": threshold, "probes": runs[layer]}
                hits.append(Hit(self.kind, probe.step, probe.step, layer, [layer], evidence, key=layer))
        return hits
