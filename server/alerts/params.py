"""Every alert rule's tunable numbers: names, defaults, bounds and what they mean.

A rule's settings for one run are ``RuleSettings(muted, params)``; ``validate_patch``
checks a PATCH body against ``RULES`` and names the offending key when it is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradwatch.protocol import ALERT_KINDS


@dataclass(frozen=True)
class Param:
    default: float
    low: float
    high: float
    integer: bool
    doc: str


def _i(default: int, low: int, high: int, doc: str) -> Param:
    return Param(float(default), float(low), float(high), True, doc)


def _f(default: float, low: float, high: float, doc: str) -> Param:
    return Param(default, low, high, False, doc)


#: kind -> parameter name -> Param. docs/alerts.md documents the same table.
RULES: dict[str, dict[str, Param]] = {
    "exploding_gradients": {
        "warmup": _i(20, 1, 100_000, "reported steps with finite norms before the rule looks at spikes"),
        "window": _i(50, 5, 10_000, "steps in the rolling median (and in the clip-multiple count)"),
        "long_window": _i(1000, 10, 1_000_000, "steps over which the rolling medians are remembered: the usual level "
                                               "is the larger of the current median and their median over this span"),
        "spike_factor": _f(10.0, 1.5, 1e6, "a norm above spike_factor x its usual level is a spike"),
        "spike_factor_learning": _f(100.0, 1.5, 1e6, "... while the loss is still falling (see trend_loss_floor): "
                                                      "healthy Adam/ResNet runs grow their norm 10x while learning"),
        "sustain": _i(4, 1, 1000, "consecutive spiking steps that raise the alert (single outlier batches are normal)"),
        "min_share": _f(0.01, 0.0, 1.0, "a variable's spike counts only if its norm is at least min_share x the "
                                        "global norm's usual level (ignores noise in tiny variables)"),
        "clip_multiple": _f(10.0, 1.0, 1e6, "the norm the clip threshold bounds (the global norm; each variable's in "
                                             "\"norm\" mode) above clip_multiple x the threshold is a hit"),
        "min_hits": _i(3, 1, 10_000, "hits within the last window steps that raise the alert"),
        "refresh": _i(10, 1, 1000, "steps between recomputations of the rolling medians"),
        "var_global_factor": _f(5.0, 1.0, 1e6, "per-variable spikes and clip_multiple hits count only while "
                                               "the global norm is at least this many times its usual level"),
        "growth_factor": _f(3.0, 1.01, 1e6, "growth rule: the global norm multiplied by at least this on each step"),
        "growth_steps": _i(1, 1, 1000, "growth rule: consecutive such steps that raise the alert (no warm-up)"),
        "growth_total": _f(1000.0, 1.0, 1e30, "growth rule: ... and the global norm's rise over them"),
        "trend_rise": _f(4.0, 1.01, 1e6, "trend rule: rise of the smoothed global norm over 10 steps"),
        "trend_rise_long": _f(3.0, 1.01, 1e6, "trend rule: rise of the smoothed global norm over 20 steps"),
        "trend_level": _f(3.0, 1.0, 1e6, "trend rule: ... up to at least this many times its usual level"),
        "trend_loss_floor": _f(1.0, 0.0, 10.0, "trend rule: ... while the loss (5-step median) is at least this share "
                                                "of its usual level (a falling loss means the model is learning)"),
        "trend_sustain": _i(2, 1, 1000, "trend rule: consecutive steps the trend must hold"),
        "loss_factor": _f(10.0, 1.01, 1e12, "loss rule: a loss (3-step running median) this many x its usual"),
        "loss_factor_lr": _f(1.5, 1.01, 1e12, "loss rule: ... or this many x while the lr rose loss_lr_rise x"),
        "loss_lr_rise": _f(100.0, 1.0, 1e12, "loss rule: a learning rate this many times its recent low"),
        "loss_sustain": _i(2, 1, 1000, "loss rule: consecutive steps above"),
        "lr_rise": _f(10.0, 1.0, 1e12, "a learning rate this many times its recent low counts as risen"),
        "lr_window": _i(500, 1, 10**9, "steps over which the learning rate's low is remembered"),
    },
    "vanishing_gradients": {
        "ratio": _f(1e-3, 1e-12, 1.0, "an earlier kernel's gradient norm below ratio x the last kernel's is starved"),
        "sustain": _i(30, 1, 100_000, "consecutive reported steps a variable must stay starved"),
    },
    "nonfinite": {
        "scaler_sustain": _i(6, 1, 100_000, "consecutive steps the mixed-precision loss scaler skips before its "
                                            "overflows are critical (fewer are information: the scaler handles them)"),
        "lr_rise": _f(10.0, 1.0, 1e12, "a learning rate this many times its recent low before the first bad step "
                                       "is named as the cause"),
        "lr_window": _i(500, 1, 10**9, "steps over which the learning rate's low is remembered"),
    },
    "dead_relu": {
        "threshold": _f(0.5, 0.0, 1.0, "share of a layer's units dead on the probe batch above which it is dying"),
        "sustain": _i(2, 1, 1000, "consecutive probes above the threshold"),
        "zero_sustain": _i(20, 1, 100_000, "consecutive steps a hidden layer's gradients are all exactly zero "
                                           "(while the output layer's are not): its units are dead"),
    },
    "frozen_batchnorm": {
        "eps": _f(1e-8, 0.0, 1.0, "moving-mean and moving-variance RMS changes below eps count as frozen"),
        "grad_eps": _f(0.0, 0.0, 1e6, "gamma/beta gradient norms above grad_eps count as training"),
        "sustain": _i(20, 1, 100_000, "consecutive BN-reporting steps frozen while gamma/beta train"),
        "untouched_min_step": _i(1, 0, 10**9, "from this step on, one sample with every moving mean exactly 0 and "
                                              "variance exactly 1 (never updated) while gamma/beta train raises it"),
        "gap_threshold": _f(1.0, 0.0, 1e6, "probe bn_gap above which a layer's moving statistics are off"),
        "gap_sustain": _i(3, 1, 1000, "consecutive probes with bn_gap above gap_threshold"),
        "gap_min_step": _i(500, 0, 10**9, "probes before this step are ignored (moving statistics still warm up; "
                                          "Keras' momentum 0.99 needs a few hundred steps)"),
    },
    "clip_saturated": {
        "fraction": _f(0.9, 0.01, 1.0, "share of the last window steps that were clipped"),
        "window": _i(100, 2, 100_000, "steps considered (the rule waits for this many)"),
        "max_scale": _f(0.2, 0.0, 1.0, "the median clip scale of the clipped steps must be at most this (clipping "
                                       "shrinks them 5x or more); 1.0: any clipping counts"),
    },
    "diverging": {
        "window": _i(5, 2, 10_000, "reported steps over which the learning rate's and the update ratio's growth "
                                   "are measured"),
        "lr_growth": _f(1.04, 1.0, 100.0, "the learning rate grew at least this much on every step of the window"),
        "lr_steady": _f(0.9, 0.0, 10.0, "... and its growth on the window's last step is at least this share of that "
                                        "on its first (a warm-up slows down as it nears its target)"),
        "ratio_growth": _f(1.02, 1.0, 100.0, "the update-to-weight ratio (median over the weight matrices) grew at "
                                             "least this much per step over the window"),
        "ratio_level": _f(2e-3, 0.0, 10.0, "... to at least this share of the weights per step"),
        "sustain": _i(2, 1, 1000, "consecutive reported steps all of it holds"),
    },
}
assert tuple(RULES) == ALERT_KINDS


def defaults(kind: str) -> dict[str, float]:
    return {name: p.default for name, p in RULES[kind].items()}


@dataclass
class RuleSettings:
    muted: bool = False
    params: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        return self.params[name]

    def view(self) -> dict[str, Any]:
        return {"muted": self.muted, "params": {k: _number(k, v, self.kind_params) for k, v in self.params.items()}}

    kind_params: dict[str, Param] = field(default_factory=dict, repr=False)


def _number(name: str, value: float, spec: dict[str, Param]) -> float | int:
    return int(value) if name in spec and spec[name].integer else value


def settings(kind: str, muted: bool = False, params: dict[str, float] | None = None) -> RuleSettings:
    merged = defaults(kind)
    for k, v in (params or {}).items():
        if k in merged:  # a stored parameter that a newer version dropped is ignored
            merged[k] = float(v)
    return RuleSettings(muted, merged, RULES[kind])


class PatchError(ValueError):
    """A PATCH body the rules cannot take; ``str(e)`` names the key and the allowed values."""


def validate_patch(kind: str, body: dict[str, Any]) -> tuple[bool | None, dict[str, float]]:
    """``(muted or None, params)`` from ``{muted?: bool, params?: {name: number}}``; raises PatchError."""
    spec = RULES[kind]
    unknown = set(body) - {"muted", "params"}
    if unknown:
        raise PatchError(f"unknown field(s) {sorted(unknown)}; the body takes 'muted' (bool) and 'params' (object)")
    muted = body.get("muted")
    if muted is not None and not isinstance(muted, bool):
        raise PatchError(f"muted must be true or false (got {muted!r})")
    raw = body.get("params") or {}
    if not isinstance(raw, dict):
        raise PatchError(f"params must be an object of name: number (got {raw!r})")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if name not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise PatchError(f"{kind} has no parameter {name!r}; its parameters: {known}")
        p = spec[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PatchError(f"{kind}.{name} must be a finite number (got {value!r})")
        if p.integer and float(value) != int(value):
            raise PatchError(f"{kind}.{name} must be a whole number (got {value!r})")
        if not p.low <= value <= p.high:
            raise PatchError(f"{kind}.{name} must be between {p.low:g} and {p.high:g} (got {value!r})")
        out[name] = float(value)
    return muted, out
