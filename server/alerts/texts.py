"""What an alert says: one or two plain-language sentences per kind, and the evidence-driven remedies.

Each kind's declaration (``spec.KindSpec`` on its rule) names its message function here and its remedies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradwatch.protocol import SEVERITIES

SEVERITY_RANK: dict[str, int] = {s: rank for rank, s in enumerate(SEVERITIES)}

#: The first remedy for frozen BatchNorm; a non-finite alert that followed one leads with it too.
TRAINING_TRUE = (
    "In a hand-written loop call the model with training=True for the training step "
    "(model(x, training=True)); model.fit does this for you."
)


def _g(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _at(layer: str | None) -> str:
    return f" in {layer}" if layer else ""


def vanishing(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    return (
        f"Gradients are vanishing: since step {e.get('since_step')} the gradient norm of {layer} stays below "
        f"{_g(e.get('threshold'))}x that of the last layer {e.get('last_layer')} (ratio {_g(e.get('ratio'))}), "
        "so the early layers barely learn."
    )


def dead_relu(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    if e.get("rule") == "zero_gradients":
        return (
            f"Layer {layer} is dead: every gradient of its weights has been exactly zero for {e.get('zero_steps')} "
            f"steps (since step {e.get('since_step')}) while the output layer {e.get('output_layer')} still "
            f"learns (gradient norm {_g(e.get('output_grad_norm'))}). {_no_gradient(e.get('activation'))}, "
            "so it no longer learns, nor do the layers before it."
        )
    return (
        f"{_g(100 * float(e.get('dead_share', 0)))}% of the ReLU units in {layer} output zero for every probe "
        f"example (over {_g(100 * float(e.get('threshold', 0)))}% on {e.get('probes')} probes in a row, "
        f"seen at step {step}); they no longer learn."
    )


def frozen_batchnorm(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    if e.get("rule") == "probe_gap":
        return (
            f"BatchNormalization layer {layer}: its moving statistics are far from the batch statistics "
            f"(gap {_g(e.get('bn_gap'))} on {e.get('probes')} probes, step {step}); inference will not match "
            "training."
        )
    if e.get("untouched"):
        return (
            f"BatchNormalization layer {layer} is frozen: at step {step} its moving means are still exactly 0 "
            "and its moving variances exactly 1, their initial values, while gamma/beta train (gradient "
            f"norm {_g(e.get('gamma_beta_grad_norm'))}): no call ever ran it in training mode — the model "
            "is probably called without training=True."
        )
    return (
        f"BatchNormalization layer {layer} is frozen: its moving mean and variance have not changed for "
        f"{e.get('sustained_steps')} steps (as of step {step}) while gamma/beta still train — the model is "
        "probably called without training=True."
    )


def clip_saturated(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    return (
        f"Clipping bites on {_g(100 * float(e.get('clipped_share', 0)))}% of the last {e.get('window')} steps "
        f"(as of step {step}; median scale {_g(e.get('median_clip_scale'))}): the clip threshold "
        f"{_g(e.get('clip_threshold'))} now acts as a lower learning rate."
    )


def diverging(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    return (
        f"Training is heading for divergence: updates are {_pct(e.get('update_ratio'))} of the weights per "
        f"step and growing x{_g(e.get('update_ratio_growth'))} a step, as the learning rate grows "
        f"x{_g(e.get('lr_growth'))} a step (now {_g(e.get('lr'))}, since step {e.get('since_step')}, seen at "
        f"step {step}): lower the learning rate or stop the warm-up."
    )


#: Activations whose derivative is exactly 0 in float32 once their input is large enough.
SATURATING = frozenset({"tanh", "sigmoid", "hard_sigmoid", "hard_tanh", "softsign", "hard_silu"})
RELU = frozenset({"relu", "relu6"})

SATURATED_REMEDIES = [
    "Lower the learning rate (large updates drive the pre-activations deep into saturation).",
    "Normalise the inputs and clip gradients (clipnorm or a clip threshold from the page).",
    "Add LayerNormalization (recurrent layers) or BatchNormalization before the activation.",
    "Use Glorot or orthogonal (recurrent_initializer='orthogonal') initialisation so pre-activations start small.",
]


def _no_gradient(activation: Any) -> str:
    """Why a layer passes no gradient, from its activation (``None``: not known)."""
    if activation in RELU:
        return "Its ReLU units output zero for every example (or it is cut off from the loss)"
    if activation in SATURATING:
        return (
            f"Its {activation} units are saturated: their inputs are so large that the derivative of {activation} "
            "is exactly zero (or it is cut off from the loss)"
        )
    what = f"{activation} " if activation else ""
    return f"Its {what}units pass no gradient: dead, saturated, or cut off from the loss"


def _pct(x: Any) -> str:
    return f"{100 * x:.2g} %" if isinstance(x, (int, float)) else "?"


def exploding(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    rule = e.get("rule")
    usual = e.get("global_norm_usual")
    if rule == "clip_multiple":
        bound = "the largest variable's gradient norm" if e.get("clip_per_variable") else "the global gradient norm"
        head = (
            f"Gradients are exploding: {bound} reached {_g(e.get('bounded_norm', e.get('global_norm')))}, over "
            f"{_g(e.get('clip_multiple'))}x the clip threshold {_g(e.get('clip_threshold'))}, on "
            f"{e.get('hits_in_window')} recent steps (global norm {_g(e.get('global_norm'))}, usually "
            f"{_g(usual)})"
        )
    elif rule == "growth":
        head = (
            f"Gradients are exploding: the global norm grew {_g(e.get('rise'))}x in {e.get('growth_steps')} "
            f"steps, to {_g(e.get('global_norm'))}"
        )
    elif rule == "trend":
        head = (
            f"Gradients are starting to explode: the global norm has climbed {_g(e.get('rise'))}x over the last "
            f"{e.get('trend_window')} steps, step after step, to {_g(e.get('global_norm'))} (usually {_g(usual)})"
        )
    elif rule == "loss":
        head = (
            f"Training is diverging: the loss reached {_g(e.get('loss'))}, {_g(e.get('loss_factor'))}x or more "
            f"its usual {_g(e.get('loss_usual'))}, while the gradient norm is {_g(e.get('global_norm'))}"
        )
    else:
        head = (
            f"Gradients are exploding: the global norm reached {_g(e.get('global_norm'))} against a usual "
            f"level of {_g(usual)}"
        )
    where = f", growing most{_at(layer)} ({_g(e.get('growth'))}x its usual level)" if layer and rule != "loss" else ""
    text = f"{head} at step {step}{where}."
    if e.get("lr_rise"):
        text += (
            f" The learning rate rose {_g(e.get('lr_rise'))}x since step {e.get('lr_since_step')} "
            f"(now {_g(e.get('lr'))})."
        )
    return text


def _cause(e: Mapping[str, Any]) -> str | None:
    """What the evidence says preceded the first non-finite step, as a clause; None when nothing did."""
    parts = []
    if e.get("preceded_by") == "exploding_gradients":
        parts.append(
            f"gradients had been exploding since step {e.get('preceded_since_step')}"
            + (f" (most in {e['preceded_layer']})" if e.get("preceded_layer") else "")
        )
    elif e.get("preceded_by") == "frozen_batchnorm":
        parts.append(
            f"BatchNormalization statistics were never updated (layer {e.get('preceded_layer')}, "
            "the model is called without training=True)"
        )
    if e.get("lr_rise"):
        parts.append(
            f"the learning rate rose {_g(e.get('lr_rise'))}x since step {e.get('lr_since_step')} "
            f"(now {_g(e.get('lr'))})"
        )
    return " and ".join(parts) or None


def cause_of(e: Mapping[str, Any]) -> str:
    """The cause a non-finite alert's remedies follow: growth, batchnorm, data or unknown."""
    if e.get("preceded_by") == "frozen_batchnorm":
        return "batchnorm"
    if e.get("preceded_by") == "exploding_gradients" or e.get("lr_rise"):
        return "growth"
    if e.get("origin_source") in ("features", "labels"):
        return "data"
    return "unknown"


def nonfinite(step: int, layer: str | None, e: Mapping[str, Any]) -> str:
    if e.get("rule") == "loss_scale":
        return (
            f"The mixed-precision loss scaler skipped {e.get('scaler_skips')} step(s) with overflowing "
            f"gradients (first at step {step}) and lowered its scale: normal at the start of training, "
            f"nothing to fix unless it goes on ({_g(e.get('scaler_sustain'))} skips in a row are critical)."
        )
    what = []
    if e.get("grad_nan"):
        what.append(f"{e['grad_nan']} NaN")
    if e.get("grad_inf"):
        what.append(f"{e['grad_inf']} Inf")
    grads = f"gradients ({', '.join(what)} elements)" if what else "values"
    cause = _cause(e)
    text = f"Non-finite {grads} appeared at step {step}"
    text += f", after {cause}" if cause else ""
    text += f", first in {layer}." if layer else "."
    if e.get("rule") == "loss_scale_persistent":
        text += (
            f" The mixed-precision loss scaler has skipped {e.get('consecutive_skips')} steps in a row: "
            "this is no longer an overflow it can handle."
        )
    if e.get("loss_nonfinite"):
        text += " The loss is NaN/Inf."
    if e.get("weight_nonfinite"):
        text += f" {e['weight_nonfinite']} weights are already non-finite."
    source = e.get("origin_source")
    if source == "features":
        text += " The NaN/Inf comes from the input features" + _detail(e) + "."
    elif source == "labels":
        text += " The NaN/Inf comes from the labels" + _detail(e) + "."
    elif source == "layer":
        text += f" It first appears in the forward output of layer {e.get('origin_layer')}" + _detail(e) + "."
    elif source == "loss":
        text += " The inputs and every layer output are finite; the loss itself produces it" + _detail(e) + "."
    elif source == "unknown":
        text += " Replaying the batch did not reproduce it" + _detail(e) + "."
    if e.get("skipped_steps"):
        text += f" The trainer's guard skipped {e['skipped_steps']} steps, so the weights were not updated with it."
    return text


#: Non-finite remedies, first the ones that address the cause.
_NONFINITE_FIRST: dict[str, list[str]] = {
    "growth": ["Lower the learning rate and clip gradients.", "Use numerically safe ops"],
    "batchnorm": [],
    "data": ["Check the inputs and labels"],
    "unknown": [],
}


def dead_relu_remedies(base: tuple[str, ...], evidence: Mapping[str, Any]) -> list[str]:
    """A layer whose saturated tanh/sigmoid units pass no gradient is not helped by ReLU advice."""
    return list(SATURATED_REMEDIES) if evidence.get("activation") in SATURATING else list(base)


def nonfinite_remedies(base: tuple[str, ...], evidence: Mapping[str, Any]) -> list[str]:
    """The remedies ordered by what the evidence says the cause is."""
    if evidence.get("rule") == "loss_scale":
        return [
            "Nothing to do while it stays occasional; if it persists, look for the step's overflow "
            "(large activations or loss) or train in float32."
        ]
    cause = cause_of(evidence)
    if cause == "batchnorm":
        return [TRAINING_TRUE, *base]
    first = [r for p in _NONFINITE_FIRST[cause] for r in base if r.startswith(p)]
    return first + [r for r in base if r not in first]


def _detail(e: Mapping[str, Any]) -> str:
    d = e.get("origin_detail")
    return f" ({d})" if d else ""
