"""The run status state machine: which events move a run between which states.

The trainer reports its state with ``status`` messages (``protocol.TrainerState``);
the server adds ``disconnect`` / ``reconnect`` for the connection::

    running  <--paused/running-->  paused
    running|paused --idle-->         idle          (a fit() ended; the monitor may train on)
    running|paused|idle --interrupted--> interrupted (a fit() ended by an exception)
    idle|interrupted --running|paused--> running|paused   (the next fit() of the same monitor)
    any live state --finished-->     finished      (terminal)
    running|paused|idle --disconnect--> disconnected
    interrupted --disconnect-->      interrupted   (what happened last stays visible)
    disconnected --reconnect-->      running       (the trainer then re-sends its own state)
    any --resume-->                  running       (a restarted trainer continues the run)

Anything else is refused with ``InvalidTransition``; callers decide whether
that is worth a warning (a late ``status`` after ``finished``) or an error.
"""

from __future__ import annotations

from typing import Literal, get_args

from gradwatch.protocol import RunStatus, TrainerState

RunEvent = Literal[TrainerState, "disconnect", "reconnect", "resume"]

_LIVE: tuple[RunStatus, ...] = ("running", "paused", "idle", "interrupted", "disconnected")
_TRAINER_STATES: tuple[TrainerState, ...] = get_args(TrainerState)

_TRANSITIONS: dict[tuple[str, str], RunStatus] = {
    # from any live state the trainer's own word decides
    **{(current, state): state for current in _LIVE for state in _TRAINER_STATES},
    ("running", "disconnect"): "disconnected",
    ("paused", "disconnect"): "disconnected",
    ("idle", "disconnect"): "disconnected",
    ("interrupted", "disconnect"): "interrupted",
    ("disconnected", "disconnect"): "disconnected",
    ("running", "reconnect"): "running",  # a new connection replaced a stale one
    ("paused", "reconnect"): "paused",  # the trainer says otherwise with its next status
    ("idle", "reconnect"): "idle",
    ("interrupted", "reconnect"): "interrupted",
    ("disconnected", "reconnect"): "running",
    ("finished", "disconnect"): "finished",
    ("finished", "finished"): "finished",
    # a restarted trainer asked to continue the run (hello.resume), whatever it was
    **{(current, "resume"): "running" for current in (*_LIVE, "finished")},
}


class InvalidTransition(ValueError):
    pass


def next_status(current: RunStatus, event: RunEvent) -> RunStatus:
    """The status after ``event``; raises ``InvalidTransition`` if the event is not allowed now."""
    try:
        return _TRANSITIONS[(current, event)]
    except KeyError:
        raise InvalidTransition(f"a run that is {current!r} cannot take event {event!r}") from None


def accepts_commands(status: RunStatus) -> bool:
    """Every run but a finished one: between fits a command waits for the next step."""
    return status != "finished"
