"""The ``exploding_gradients`` rule: gradient norms running away (spike, clip multiple, loss; growth and trend)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .. import texts
from ..series import BoolArray, FloatArray, Ring, StepBatch, run_lengths
from ..spec import Evidence, KindSpec, RuleSettings, real, whole
from .base import Hit, Rule, RunInfo
from .exploding_trend import GrowthTrend, median_of
from .lr_rise import LrRise


class ExplodingGradients(Rule):
    """Gradient norms running away, seen four ways (``evidence["rule"]`` says which):

    - ``growth``: the global norm multiplied by ``growth_factor`` or more on each of ``growth_steps``
      steps in a row, ``growth_total``x or more in all; needs no history, so it sees divergence within
      the first steps;
    - ``trend``: after the warm-up, the global norm (a 5-step running median of its log, so that one ragged
      batch is not a trend) climbed ``trend_rise``x over 10 steps or ``trend_rise_long``x over 20, rising in
      every part of the window (a step change is not a trend), and is ``trend_level``x its usual level,
      while the loss has stopped falling: early warning of a gradual explosion;
    - ``spike``: norms above ``spike_factor`` x their usual level for ``sustain`` steps in a row
      (``spike_factor_learning`` x while the loss is still falling);
    - ``clip_multiple``: the norm the clip threshold bounds (the global norm, or in ``norm`` mode each
      variable's) far above the threshold while also far above its usual level;
    - ``loss``: the loss (a 3-step running median) ``loss_factor``x its usual level for ``loss_sustain``
      steps, or ``loss_factor_lr``x while the learning rate rose ``loss_lr_rise``x: a run diverging under
      a runaway learning rate while adaptive optimizers (Adam, RMSprop) keep the gradient norm bounded.
    """

    spec = KindSpec(
        kind="exploding_gradients",
        severity="critical",
        clear_steps=50,  # the rolling window
        params={
            "warmup": whole(20, 1, 100_000, "reported steps with finite norms before the rule looks at spikes"),
            "window": whole(50, 5, 10_000, "steps in the rolling median (and in the clip-multiple count)"),
            "long_window": whole(
                1000,
                10,
                1_000_000,
                "steps over which the rolling medians are remembered: the usual level "
                "is the larger of the current median and their median over this span",
            ),
            "spike_factor": real(10.0, 1.5, 1e6, "a norm above spike_factor x its usual level is a spike"),
            "spike_factor_learning": real(
                100.0,
                1.5,
                1e6,
                "... while the loss is still falling (see trend_loss_floor): "
                "healthy Adam/ResNet runs grow their norm 10x while learning",
            ),
            "sustain": whole(
                4, 1, 1000, "consecutive spiking steps that raise the alert (single outlier batches are normal)"
            ),
            "min_share": real(
                0.01,
                0.0,
                1.0,
                "a variable's spike counts only if its norm is at least min_share x the "
                "global norm's usual level (ignores noise in tiny variables)",
            ),
            "clip_multiple": real(
                10.0,
                1.0,
                1e6,
                "the norm the clip threshold bounds (the global norm; each variable's in "
                '"norm" mode) above clip_multiple x the threshold is a hit',
            ),
            "min_hits": whole(3, 1, 10_000, "hits within the last window steps that raise the alert"),
            "refresh": whole(10, 1, 1000, "steps between recomputations of the rolling medians"),
            "var_global_factor": real(
                5.0,
                1.0,
                1e6,
                "per-variable spikes and clip_multiple hits count only while "
                "the global norm is at least this many times its usual level",
            ),
            "growth_factor": real(
                3.0, 1.01, 1e6, "growth rule: the global norm multiplied by at least this on each step"
            ),
            "growth_steps": whole(1, 1, 1000, "growth rule: consecutive such steps that raise the alert (no warm-up)"),
            "growth_total": real(1000.0, 1.0, 1e30, "growth rule: ... and the global norm's rise over them"),
            "trend_rise": real(4.0, 1.01, 1e6, "trend rule: rise of the smoothed global norm over 10 steps"),
            "trend_rise_long": real(3.0, 1.01, 1e6, "trend rule: rise of the smoothed global norm over 20 steps"),
            "trend_level": real(3.0, 1.0, 1e6, "trend rule: ... up to at least this many times its usual level"),
            "trend_loss_floor": real(
                1.0,
                0.0,
                10.0,
                "trend rule: ... while the loss (5-step median) is at least this share "
                "of its usual level (a falling loss means the model is learning)",
            ),
            "trend_sustain": whole(2, 1, 1000, "trend rule: consecutive steps the trend must hold"),
            "loss_factor": real(10.0, 1.01, 1e12, "loss rule: a loss (3-step running median) this many x its usual"),
            "loss_factor_lr": real(1.5, 1.01, 1e12, "loss rule: ... or this many x while the lr rose loss_lr_rise x"),
            "loss_lr_rise": real(100.0, 1.0, 1e12, "loss rule: a learning rate this many times its recent low"),
            "loss_sustain": whole(2, 1, 1000, "loss rule: consecutive steps above"),
            "lr_rise": real(10.0, 1.0, 1e12, "a learning rate this many times its recent low counts as risen"),
            "lr_window": whole(500, 1, 10**9, "steps over which the learning rate's low is remembered"),
        },
        remedies=(
            "Clip gradients (set a global-norm clip threshold from the page, or clipnorm/global_clipnorm).",
            "Lower the learning rate (set_lr from the page) or add warm-up.",
            "Use He/Xavier (Glorot) initialisation instead of large random weights.",
            "Add BatchNormalization or LayerNormalization; check the inputs are scaled.",
        ),
        message=texts.exploding,
    )

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
        self.early = GrowthTrend()  # the growth and trend rules
        self.losses = Ring(self.window, 1)  # recent finite losses, for their usual level
        self.recent_loss: deque[float] = deque(maxlen=3)
        self.loss_run = 0
        self.lr = LrRise(self.p["lr_window"], self.p["lr_rise"])

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
        early = self._growth_and_trend(batch, norms, finite)  # before the reference moves with this batch
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
        candidates = [h for h in (early, self._loss_rule(batch, norms)) if h is not None]
        if first is not None:
            row, values, reference = first
            hit = self._hit(batch, row, last_row, values, reference, "spike")
            hit.evidence["sustained_steps"] = need
            candidates.append(hit)
        hits = [min(candidates, key=lambda h: h.step)] if candidates else []
        if hits and hits[0].evidence.get("rule") != "loss":
            hits[0].evidence.update(self.lr.follow(batch, len(batch) - 1))
        clip_hit = self._clip_rule(batch)
        if clip_hit is not None and not hits:
            hits.append(clip_hit)
        return hits

    def _growth_and_trend(self, batch: StepBatch, norms: FloatArray, finite: BoolArray) -> Hit | None:
        """The ``growth`` and ``trend`` rules, row by row over the batch's finite global norms."""
        usual = self.median[0] if self.median is not None and self.median[0] > 0 else None
        usual_loss = float(self.losses.median()[0]) if self.losses.filled >= self.p["warmup"] else math.nan
        found = self.early.scan(self.p, batch, finite, usual, usual_loss, self.seen)
        if found is None:
            return None
        row, how, extra = found
        return self._early_hit(batch, row, norms[row], how, extra)

    def _loss_rule(self, batch: StepBatch, norms: FloatArray) -> Hit | None:
        found: Hit | None = None
        usual = float(self.losses.median()[0]) if self.losses.filled >= self.p["warmup"] else math.nan
        kept: list[float] = []
        rows = np.flatnonzero(np.isfinite(batch.loss)).tolist()
        for r in rows:
            loss = float(batch.loss[r])
            self.recent_loss.append(loss)
            smooth = median_of(list(self.recent_loss))
            risen = self.lr.follow(batch, r)
            lr_risen = float(risen.get("lr_rise") or 0.0) >= self.p["loss_lr_rise"]
            factor = self.p["loss_factor_lr"] if lr_risen else self.p["loss_factor"]
            up = usual > 0 and smooth > factor * usual
            self.loss_run = self.loss_run + 1 if up else 0
            if not up:
                kept.append(loss)
            if found is None and self.loss_run >= self.p["loss_sustain"]:
                reference = self.median if self.median is not None else np.full(norms.shape[1], np.nan)
                found = self._hit(batch, r, r, norms[r], reference, "loss")
                found.evidence.update(
                    {"loss": loss, "loss_usual": usual, "loss_factor": factor, "loss_steps": self.loss_run, **risen}
                )
        if kept:
            self.losses.extend(np.asarray(kept)[:, None])
        return found

    def _early_hit(self, batch: StepBatch, row: int, values: FloatArray, how: str, extra: Evidence) -> Hit:
        reference = self.median if self.median is not None else np.full(values.shape, np.nan)
        hit = self._hit(batch, row, row, values, reference, how)
        hit.evidence.update(extra)
        return hit

    def _spikes(self, rows: FloatArray, median: FloatArray) -> np.ndarray:
        factor = self.p["spike_factor"]
        with np.errstate(invalid="ignore", divide="ignore"):
            over = rows > factor * median[None, :]
            # A variable's spike counts only while the global norm itself is up: a small variable (an
            # attention key, a recurrent bias) can jump 10x with no effect on the update.
            global_up = rows[:, 0] > self.p["var_global_factor"] * median[0]
        floor = self.p["min_share"] * median[0]
        over[:, 1:] &= (rows[:, 1:] >= floor) & global_up[:, None]  # tiny variables' noise is not an explosion
        over &= median[None, :] > 0
        if self.early.falling:  # norms that grow while the loss falls: a model learning, unless the growth is extreme
            with np.errstate(invalid="ignore"):
                over &= rows > self.p["spike_factor_learning"] * median[None, :]
        return over

    def _grown(self, values: FloatArray, median: FloatArray) -> tuple[int, float]:
        """The variable that grew most in absolute terms (what moved the global norm), and its growth."""
        with np.errstate(invalid="ignore", divide="ignore"):
            base = np.where(np.isfinite(median[1:]), median[1:], 0.0)
            increase = np.nan_to_num(values[1:] - base, nan=-np.inf, posinf=np.finfo(np.float64).max)
            growth = np.where(base > 0, values[1:] / base, np.inf)
        if not increase.size:
            return -1, 0.0
        j = int(np.argmax(increase))
        g = float(growth[j])
        return j, g if math.isfinite(g) else 0.0

    def _hit(self, batch: StepBatch, row: int, last_row: int, values: FloatArray, median: FloatArray, how: str) -> Hit:
        j, growth = self._grown(values, median)
        layer = self.run.variables[j] if j >= 0 else None
        with np.errstate(invalid="ignore", divide="ignore"):
            over = values[1:] > self.p["spike_factor"] * median[1:]
        over &= values[1:] >= self.p["min_share"] * (median[0] if np.isfinite(median[0]) else values[0])
        layers = [v for v, o in zip(self.run.variables, over.tolist(), strict=True) if o] or ([layer] if layer else [])
        evidence: Evidence = {
            "rule": how,
            "global_norm": float(values[0]),
            "global_norm_usual": float(median[0]) if np.isfinite(median[0]) else None,
            "growth": round(growth, 3),
            "spike_factor": self.p["spike_factor"],
            "window": self.window,
        }
        if layer is not None:
            evidence["layer_norm"] = float(values[1 + j])
            evidence["layer_norm_usual"] = float(median[1 + j]) if np.isfinite(median[1 + j]) else None
        return Hit(self.kind, int(batch.step[row]), int(batch.step[last_row]), layer, layers, evidence)

    def _clip_rule(self, batch: StepBatch) -> Hit | None:
        multiple = self.p["clip_multiple"]
        # The norm the threshold bounds: the global norm, or in "norm" mode the largest variable's;
        # a "value" threshold bounds elements, so no norm is compared with it.
        bounded = np.where(batch.clip_per_variable, np.max(batch.grad, axis=1, initial=0.0), batch.global_norm)
        usual = self.median[0] if self.median is not None else np.nan
        with np.errstate(invalid="ignore"):
            hits = (
                np.isfinite(bounded)
                & (bounded > multiple * batch.clip_threshold)
                & ~batch.clip_value
                & (batch.global_norm > self.p["var_global_factor"] * usual)
            )
        history = np.concatenate([self.clip_hits, hits])
        w = self.window
        if not hits.any():  # only a hit in this batch can fire (the usual case: none)
            self.clip_hits = history[-w:]
            return None
        counts = np.cumsum(history)
        lagged = np.concatenate([np.zeros(w, dtype=np.int64), counts])[: counts.size]
        in_window = (counts - lagged)[-len(batch) :] if len(batch) else counts[:0]
        self.clip_hits = history[-w:]
        fire = np.flatnonzero(hits & (in_window >= self.p["min_hits"]))
        if not fire.size or self.median is None or self.seen < self.p["warmup"]:
            return None
        row = int(fire[0])
        values = np.concatenate([batch.global_norm[row : row + 1], batch.grad[row]])
        hit = self._hit(batch, row, int(fire[-1]), values, self.median, "clip_multiple")
        hit.evidence.update(
            {
                "clip_threshold": float(batch.clip_threshold[row]),
                "clip_multiple": multiple,
                "hits_in_window": int(in_window[row]),
                "bounded_norm": float(bounded[row]),
                "clip_per_variable": int(bool(batch.clip_per_variable[row])),
            }
        )
        return hit
