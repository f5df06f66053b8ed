"""The step-record rules: exploding and vanishing gradients, non-finite values, saturated clipping.

Each rule keeps its own rolling state for one run and turns a ``StepBatch`` into
``Hit``s: the (kind, layer) conditions that hold somewhere in the batch, with
the first and last step they held at. The engine decides whether a hit is a new
alert, a re-trigger or the continuation of one already raised.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

import numpy as np

from gradwatch.protocol import Probe

from . import texts
from .series import BoolArray, FloatArray, IntArray, Ring, StepBatch, first_at_least, run_lengths
from .spec import Evidence, KindSpec, RuleSettings, real, whole


@dataclass(frozen=True)
class RunInfo:
    variables: list[str]
    bn_layers: list[str]
    relu_layers: list[str] = field(default_factory=list)
    guard_nonfinite: bool = False
    activations: dict[str, str] = field(default_factory=dict)  # TrainerHello.activations
    bn_inference: list[str] = field(default_factory=list)  # TrainerHello.bn_inference

    def activation(self, layer: str) -> str | None:
        """The activation of ``layer`` (a variable's layer path) or of the nearest layer that contains it."""
        path = layer
        while path:
            if path in self.activations:
                return self.activations[path]
            path = path.rpartition("/")[0]
        return self.activations.get(layer.rpartition("/")[2])


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
    #: Overrides the kind's severity (e.g. "info" for an overflow the loss scaler handled).
    severity: str | None = None


class LrRise:
    """Follows the learning rate: how far it rose above its recent low (the low forgets after ``window`` steps)."""

    def __init__(self, window: float, rise: float) -> None:
        self.window, self.rise = window, rise
        self.low: tuple[float, int] | None = None  # the lowest learning rate seen recently, and its step

    def follow(self, batch: StepBatch, upto: int) -> Evidence:
        """Evidence of a rise of at least ``rise``x at row ``upto`` (empty if none), following rows up to it."""
        lr, steps = batch.lr[: upto + 1], batch.step[: upto + 1]
        ok = np.isfinite(lr) & (lr > 0)
        if not ok.any():
            return {}
        if (
            self.low is not None
            and ok.all()
            and float(lr.min()) >= self.low[0]
            and int(steps[-1]) - self.low[1] <= self.window
        ):
            pass  # the usual case: nothing lower, the low still recent
        else:
            for value, step in zip(lr[ok].tolist(), steps[ok].tolist(), strict=True):
                if self.low is None or value < self.low[0] or step - self.low[1] > self.window:
                    self.low = (value, step)
        if self.low is None or not ok[-1]:
            return {}
        rise = float(lr[-1]) / self.low[0]
        if rise < self.rise:
            return {}
        return {"lr": float(lr[-1]), "lr_rise": round(rise, 3), "lr_since_step": self.low[1]}


class Rule:
    #: The kind this rule raises, declared once beside it: severity, clear steps, parameters, message, remedies.
    spec: ClassVar[KindSpec]
    kind: ClassVar[str]  # spec.kind
    clear_steps: ClassVar[int]  # spec.clear_steps

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.kind, cls.clear_steps = cls.spec.kind, cls.spec.clear_steps

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        self.run = run
        self.p = settings.params

    def observe(self, batch: StepBatch) -> list[Hit]:
        return []

    def checked_steps(self, batch: StepBatch) -> IntArray:
        """The steps of ``batch`` on which ``observe`` checked its condition (a step without a hit is clear)."""
        return batch.step

    def observe_probe(self, probe: Probe) -> list[Hit]:
        return []


def _median(values: list[float]) -> float:
    """The median of a handful of floats (np.median costs ~50 us of argument handling on five values)."""
    v = sorted(values)
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2


KERNEL_SUFFIXES = ("kernel", "weight", "weights", "embeddings", "depthwise_kernel")


def kernel_indices(variables: list[str]) -> list[int]:
    """Indices of weight matrices (by name), in model order; all variables if none match."""
    idx = [i for i, v in enumerate(variables) if v.rsplit("/", 1)[-1].endswith(KERNEL_SUFFIXES)]
    return idx or list(range(len(variables)))


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
    SMOOTH = 5
    TRENDS = ((10, 2), (20, 3))  # (window, parts)

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
        keep = max(w for w, _ in self.TRENDS) + self.SMOOTH + 1
        self.logs: deque[float] = deque(maxlen=keep)  # the last finite log global norms
        self.smooth: deque[float] = deque(maxlen=keep)  # their running medians
        self.trend_run = 0
        self.growth_run = 0
        self.losses = Ring(self.window, 1)  # recent finite losses, for their usual level
        self.recent_loss: deque[float] = deque(maxlen=3)
        self.trend_losses: deque[float] = deque(maxlen=self.SMOOTH)
        self.falling = False  # the loss is still falling (as of the last finite row)
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
        factor, steps_needed = math.log(self.p["growth_factor"]), int(self.p["growth_steps"])
        growth_total = math.log(self.p["growth_total"])
        rises = {10: math.log(self.p["trend_rise"]), 20: math.log(self.p["trend_rise_long"])}
        usual = self.median[0] if self.median is not None and self.median[0] > 0 else None
        level = math.log(self.p["trend_level"] * usual) if usual is not None else math.inf
        usual_loss = float(self.losses.median()[0]) if self.losses.filled >= self.p["warmup"] else math.nan
        found: Hit | None = None
        with np.errstate(divide="ignore"):
            logs = np.log(batch.global_norm)
        for r in np.flatnonzero(finite & np.isfinite(logs)).tolist():
            x = float(logs[r])
            if math.isfinite(batch.loss[r]):
                self.trend_losses.append(float(batch.loss[r]))
            prev = self.logs[-1] if self.logs else None
            self.logs.append(x)
            self.smooth.append(_median([self.logs[-i] for i in range(1, min(self.SMOOTH, len(self.logs)) + 1)]))
            self.growth_run = self.growth_run + 1 if prev is not None and x - prev >= factor else 0
            if found is not None:
                continue
            total = x - self.logs[-1 - min(self.growth_run, len(self.logs) - 1)] if self.growth_run else 0.0
            if self.growth_run >= steps_needed and total >= growth_total:
                found = self._early_hit(
                    batch,
                    r,
                    norms[r],
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
                and _median(list(self.trend_losses)) < self.p["trend_loss_floor"] * usual_loss
            )
            self.falling = falling
            if self.seen < self.p["warmup"] or x < level or falling:
                self.trend_run = 0
                continue
            trend = self._trend(rises)
            self.trend_run = self.trend_run + 1 if trend is not None else 0
            if trend is not None and self.trend_run >= self.p["trend_sustain"]:
                window, rise = trend
                found = self._early_hit(
                    batch,
                    r,
                    norms[r],
                    "trend",
                    {
                        "trend_window": window,
                        "rise": round(rise, 3),
                        "since_step": int(batch.step[r]) - window,
                        "global_norm_usual": float(usual) if usual is not None else None,
                    },
                )
        return found

    def _loss_rule(self, batch: StepBatch, norms: FloatArray) -> Hit | None:
        found: Hit | None = None
        usual = float(self.losses.median()[0]) if self.losses.filled >= self.p["warmup"] else math.nan
        kept: list[float] = []
        rows = np.flatnonzero(np.isfinite(batch.loss)).tolist()
        for r in rows:
            loss = float(batch.loss[r])
            self.recent_loss.append(loss)
            smooth = _median(list(self.recent_loss))
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

    def _trend(self, rises: dict[int, float]) -> tuple[int, float] | None:
        """(window, rise) of the first window over which the smoothed log norm climbed steadily."""
        sm, n = self.smooth, len(self.smooth)
        for window, parts in self.TRENDS:
            if n <= window + self.SMOOTH:
                continue
            points = [sm[n - 1 - window + round(k * window / parts)] for k in range(parts + 1)]
            total = points[-1] - points[0]
            # Steadily: every part of the window carries its share of the rise (a step change is no trend).
            if total >= rises[window] and all(b - a >= 0.3 * total / parts for a, b in pairwise(points)):
                return window, math.exp(total)
        return None

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
        if self.falling:  # norms that grow while the loss falls: a model learning, unless the growth is extreme
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
