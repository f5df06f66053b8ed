"""The step-record rules: exploding and vanishing gradients, non-finite values, saturated clipping.

Each rule keeps its own rolling state for one run and turns a ``StepBatch`` into
``Hit``s: the (kind, layer) conditions that hold somewhere in the batch, with
the first and last step they held at. The engine decides whether a hit is a new
alert, a re-trigger or the continuation of one already raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gradwatch.protocol import Probe

from .params import RuleSettings
from .series import FloatArray, Ring, StepBatch, first_at_least, run_lengths

Evidence = dict[str, float | int | str | None]


@dataclass(frozen=True)
class RunInfo:
    variables: list[str]
    bn_layers: list[str]
    relu_layers: list[str] = field(default_factory=list)
    guard_nonfinite: bool = False


@dataclass
class Hit:
    kind: str
    step: int
    last_step: int
    layer: str | None
    layers: list[str]
    evidence: Evidence
    #: Episode identity: a hit with the same key as the previous batch continues that episode.
    key: str | None = None


class Rule:
    kind = ""

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        self.run = run
        self.p = settings.params

    def observe(self, batch: StepBatch) -> list[Hit]:
        return []

    def observe_probe(self, probe: Probe) -> list[Hit]:
        return []


KERNEL_SUFFIXES = ("kernel", "weight", "weights", "embeddings", "depthwise_kernel")


def kernel_indices(variables: list[str]) -> list[int]:
    """Indices of weight matrices (by name), in model order; all variables if none match."""
    idx = [i for i, v in enumerate(variables) if v.rsplit("/", 1)[-1].endswith(KERNEL_SUFFIXES)]
    return idx or list(range(len(variables)))


class ExplodingGradients(Rule):
    """Norms far above their usual level for several steps in a row, or far above the clip threshold."""

    kind = "exploding_gradients"

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.window = int(self.p["window"])
        width = len(run.variables) + 1  # column 0: the global norm
        self.ring = Ring(self.window, width)
        self.long = Ring(max(1, int(self.p["long_window"]) // int(self.p["refresh"])), width)
        self.seen = 0  # finite rows pushed
        self.since_refresh = 0
        self.median: FloatArray | None = None
        self.carry = np.zeros(width, dtype=np.int64)
        self.clip_hits = np.zeros(0, dtype=bool)  # last `window` steps: norm > clip_multiple x threshold

    def _reference(self) -> FloatArray | None:
        """The usual level: the larger of the window's median and the long-run median of those medians."""
        if self.ring.filled == 0 or self.seen < self.p["warmup"]:
            return None
        median = self.ring.median()
        self.long.extend(median[None, :])
        return np.maximum(median, self.long.median())

    def observe(self, batch: StepBatch) -> list[Hit]:
        norms = np.concatenate([batch.global_norm[:, None], batch.grad], axis=1)
        finite = np.isfinite(norms).all(axis=1)
        refresh = int(self.p["refresh"])
        need = int(self.p["sustain"])
        first: tuple[int, FloatArray, FloatArray] | None = None  # row, norms, reference
        last_row = -1
        start = 0
        while start < len(batch):  # chunks between refreshes of the reference, each compared as one array
            if self.median is None or self.since_refresh >= refresh:
                self.median = self._reference()
                self.since_refresh = 0
            stop = min(len(batch), start + max(1, refresh - self.since_refresh))
            rows = norms[start:stop]
            ok = finite[start:stop]
            if self.median is not None:
                spikes = self._spikes(rows, self.median) & ok[:, None]
                runs, self.carry = run_lengths(spikes, self.carry)
                fire = np.flatnonzero((runs >= need).any(axis=1))
                if fire.size:
                    if first is None:
                        r = int(fire[0])
                        first = (start + r, rows[r], self.median)
                    last_row = start + int(fire[-1])
            good = rows[ok]
            if good.size:
                self.ring.extend(good)
                self.seen += int(good.shape[0])
            self.since_refresh += stop - start
            start = stop
        hits = []
        if first is not None:
            row, values, reference = first
            hit = self._hit(batch, row, last_row, values, reference, "spike")
            hit.evidence["sustained_steps"] = need
            hits.append(hit)
        clip_hit = self._clip_rule(batch)
        if clip_hit is not None and not hits:
            hits.append(clip_hit)
        return hits

    def _spikes(self, rows: FloatArray, median: FloatArray) -> np.ndarray:
        factor = self.p["spike_factor"]
        with np.errstate(invalid="ignore", divide="ignore"):
            over = rows > factor * median[None, :]
        floor = self.p["min_share"] * median[0]
        over[:, 1:] &= rows[:, 1:] >= floor  # tiny variables' noise is not an explosion
        over &= median[None, :] > 0
        return over

    def _grown(self, values: FloatArray, median: FloatArray) -> tuple[int, float]:
        with np.errstate(invalid="ignore", divide="ignore"):
            growth = np.where(median[1:] > 0, values[1:] / median[1:], 0.0)
        growth = np.nan_to_num(growth, nan=0.0, posinf=np.finfo(np.float64).max)
        j = int(np.argmax(growth)) if growth.size else -1
        return j, float(growth[j]) if j >= 0 else 0.0

    def _hit(self, batch: StepBatch, row: int, last_row: int, values: FloatArray, median: FloatArray,
             how: str) -> Hit:
        j, growth = self._grown(values, median)
        layer = self.run.variables[j] if j >= 0 else None
        with np.errstate(invalid="ignore", divide="ignore"):
            over = values[1:] > self.p["spike_factor"] * median[1:]
        layers = [v for v, o in zip(self.run.variables, over.tolist(), strict=True) if o] or ([layer] if layer else [])
        evidence: Evidence = {
            "rule": how, "global_norm": float(values[0]), "global_norm_usual": float(median[0]),
            "growth": round(growth, 3), "spike_factor": self.p["spike_factor"], "window": self.window,
        }
        if layer is not None:
            evidence["layer_norm"] = float(values[1 + j])
            evidence["layer_norm_usual"] = float(median[1 + j])
        return Hit(self.kind, int(batch.step[row]), int(batch.step[last_row]), layer, layers, evidence)

    def _clip_rule(self, batch: StepBatch) -> Hit | None:
        multiple = self.p["clip_multiple"]
        with np.errstate(invalid="ignore"):
            hits = np.isfinite(batch.global_norm) & (batch.global_norm > multiple * batch.clip_threshold)
        history = np.concatenate([self.clip_hits, hits])
        w = self.window
        if not hits.any():  # only a hit in this batch can fire (the usual case: none)
            self.clip_hits = history[-w:]
            return None
        counts = np.cumsum(history)
        lagged = np.concatenate([np.zeros(w, dtype=np.int64), counts])[: counts.size]
        in_window = (counts - lagged)[-len(batch):] if len(batch) else counts[:0]
        self.clip_hits = history[-w:]
        fire = np.flatnonzero(hits & (in_window >= self.p["min_hits"]))
        if not fire.size or self.median is None or self.seen < self.p["warmup"]:
            return None
        row = int(fire[0])
        values = np.concatenate([batch.global_norm[row:row + 1], batch.grad[row]])
        hit = self._hit(batch, row, int(fire[-1]), values, self.median, "clip_multiple")
        hit.evidence.update({"clip_threshold": float(batch.clip_threshold[row]), "clip_multiple": multiple,
                             "hits_in_window": int(in_window[row])})
        return hit


class VanishingGradients(Rule):
    """Earlier kernels' gradient norms far below the last kernel's, for many steps in a row."""

    kind = "vanishing_gradients"

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.kernels = kernel_indices(run.variables)
        self.carry = np.zeros(max(0, len(self.kernels) - 1), dtype=np.int64)

    def observe(self, batch: StepBatch) -> list[Hit]:
        if len(self.kernels) < 2 or not len(batch):
            return []
        last = batch.grad[:, self.kernels[-1]]
        early = batch.grad[:, self.kernels[:-1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = early / last[:, None]
        usable = np.isfinite(last) & (last > 0)
        starved = (ratios < self.p["ratio"]) & np.isfinite(early) & usable[:, None]
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
        evidence: Evidence = {
            "ratio": float(ratios[last_row, c0]), "threshold": self.p["ratio"],
            "sustained_steps": int(runs[last_row, c0]),
            "layer_norm": float(early[last_row, c0]), "last_layer": self.run.variables[self.kernels[-1]],
            "last_layer_norm": float(last[last_row]), "since_step": int(batch.step[row]) - need + 1,
        }
        return [Hit(self.kind, int(batch.step[row]), int(batch.step[last_row]), names[0], names, evidence)]


class Nonfinite(Rule):
    """Any NaN or Inf in the gradients, the loss or the weights."""

    kind = "nonfinite"

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        super().__init__(run, settings)
        self.skipped = 0

    def observe(self, batch: StepBatch) -> list[Hit]:
        self.skipped += int(batch.skipped.sum())
        bad_grad = (batch.nan + batch.inf) > 0
        grad_rows = bad_grad.any(axis=1) | ~np.isfinite(batch.global_norm)
        loss_rows = batch.loss_nonfinite
        rows = grad_rows | loss_rows | (batch.weight_nonfinite > 0)
        where = np.flatnonzero(rows)
        if not where.size:
            return []
        r = int(where[0])
        cols = np.flatnonzero(bad_grad[r]).tolist()
        if not cols:  # counts missing: fall back to the norms themselves
            cols = np.flatnonzero(~np.isfinite(batch.grad[r])).tolist()
        names = [self.run.variables[c] for c in cols]
        evidence: Evidence = {
            "grad_nan": int(batch.nan[r].sum()), "grad_inf": int(batch.inf[r].sum()),
            "loss_nonfinite": int(bool(loss_rows[r])), "weight_nonfinite": int(batch.weight_nonfinite[r]),
            "variables_affected": len(names), "nonfinite_steps": int(where.size),
        }
        if self.run.guard_nonfinite or self.skipped:
            evidence["skipped_steps"] = self.skipped
        return [Hit(self.kind, int(batch.step[r]), int(batch.step[int(where[-1])]), names[0] if names else None,
                    names, evidence)]


class ClipSaturated(Rule):
    """Nearly every recent step clipped: clipping has become a lower learning rate."""

    kind = "clip_saturated"

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
        window_scales = scales[max(0, last + 1 - w): last + 1]
        evidence: Evidence = {
            "clipped_share": round(float(share[last]), 4), "fraction": self.p["fraction"], "window": w,
            "median_clip_scale": float(np.nanmedian(window_scales)) if window_scales.size else None,
            "clip_threshold": float(batch.clip_threshold[last - before]),
        }
        return [Hit(self.kind, int(batch.step[r - before]), int(batch.step[last - before]), None, [], evidence)]
