"""The shared vocabularies, each declared once: clip modes, run statuses, commands, severities, alert kinds and states.

Each is a ``Literal`` type (what the models' fields take) and its tuple of words (what code iterates and the page's
generated ``client/protocol.js`` lists).
"""

from __future__ import annotations

from typing import Literal, get_args

#: How the trainer clips (``ClipSetting.mode``): ``global_norm`` (Keras' ``global_clipnorm``), ``norm`` (per variable,
#: ``clipnorm``), ``value`` (per element, ``clipvalue``).
ClipMode = Literal["global_norm", "norm", "value"]
CLIP_MODES: tuple[str, ...] = get_args(ClipMode)


def check_clip_mode(mode: object, name: str = "clip_mode") -> str:
    """``mode`` if it is a ``ClipMode``; else a ValueError naming ``name``'s bad value and the choices."""
    if not isinstance(mode, str) or mode not in CLIP_MODES:
        raise ValueError(f"{name}={mode!r} is not one of {CLIP_MODES}")
    return mode


#: What the trainer says its run is doing (``Status.state``): ``idle`` between two ``fit()`` calls
#: (or ``watch()`` blocks) of one monitor, ``interrupted`` after one ended by an exception
#: (KeyboardInterrupt, another callback's error). Both continue as ``running`` with the next fit.
TrainerState = Literal["running", "paused", "idle", "interrupted", "finished"]
TRAINER_STATES: tuple[str, ...] = get_args(TrainerState)
#: A run's status on the server: the trainer's state, or ``disconnected`` when its trainer went away.
RunStatus = Literal[TrainerState, "disconnected"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
#: The control commands (``Command.type``). A new command is declared here, in ``CommandType`` and
#: ``COMMAND_PARAMS`` below (its parameters); the trainer says in which of its states it applies and what it does
#: (``trainer_hooks/control.py``, checked against ``COMMANDS`` at import); the page reads the list from the
#: generated ``client/protocol.js``.
CommandType = Literal["pause", "resume", "stop", "set_clip", "set_lr", "rewind"]
COMMANDS: tuple[str, ...] = get_args(CommandType)
#: An alert's severity, lowest first (the order ranks them): ``info`` is worth knowing and needs no action
#: (an overflow the loss scaler handled) and never pauses a run.
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
#: The severities that call for action: what ``pause_on`` acts on and a webhook may be set to post from.
ACTION_SEVERITIES: tuple[str, ...] = SEVERITIES[1:]
#: The alert kinds, in the order the server evaluates them (exploding before nonfinite: growth that ends in NaN is
#: raised as what it is first). The server declares each kind's rule, severity, parameters and texts beside its
#: rule (``server/alerts/kinds.py`` checks that they cover exactly these).
AlertKind = Literal[
    "exploding_gradients",
    "vanishing_gradients",
    "nonfinite",
    "dead_relu",
    "frozen_batchnorm",
    "clip_saturated",
    "diverging",
]
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)
#: What the page calls each kind.
ALERT_LABELS: dict[str, str] = {
    "exploding_gradients": "Exploding gradients",
    "vanishing_gradients": "Vanishing gradients",
    "nonfinite": "NaN / Inf gradients",
    "dead_relu": "Dead ReLU units",
    "frozen_batchnorm": "Frozen BatchNorm",
    "clip_saturated": "Clipping saturated",
    "diverging": "Heading for divergence",
}
if tuple(ALERT_LABELS) != ALERT_KINDS:
    raise TypeError(f"ALERT_LABELS {tuple(ALERT_LABELS)} differ from AlertKind {ALERT_KINDS}")

#: An alert's lifecycle (``AlertView.state``, docs/alerts.md "Lifecycle"): ``open`` while its condition holds or
#: has been clear for fewer steps than its kind's clear steps, then ``resolved``. A condition that returns after
#: that opens a new alert of the same kind and layer: its next episode (``count`` + 1).
AlertState = Literal["open", "resolved"]
ALERT_STATES: tuple[str, ...] = get_args(AlertState)

CommandState = Literal["pending", "applied", "rejected"]
