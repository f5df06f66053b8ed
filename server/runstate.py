"""The run status state machine: which events move a run between which states.

::

    running  --paused-->       paused   --running--> running
    running|paused --finished-->      finished   (terminal)
    running|paused --disconnect-->    disconnected
    disconnected --reconnect-->       running
    disconnected --running|paused-->  running|paused   (a status right after reconnecting)

Anything else is refused with ``InvalidTransition``; callers decide whether
that is worth a warning (a late ``status`` after ``finished``) or an error.
"""

from __future__ import annotations

from typing import Literal

from gradwatch.protocol import RunStatus

RunEvent = Literal["running", "paused", "finished", "disconnect", "reconnect"]

_TRANSITIONS: dict[tuple[str, str], RunStatus] = {
    ("running", "running"): "running",
    ("running", "paused"): "paused",
    ("running", "finished"): "finished",
    ("running", "disconnect"): "disconnected",
    ("running", "reconnect"): "running",  # a new connection replaced a stale one
    ("paused", "paused"): "paused",
    ("paused", "running"): "running",
    ("paused", "finished"): "finished",
    ("paused", "disconnect"): "disconnected",
    ("paused", "reconnect"): "paused",  # the trainer says otherwise with its next status
    ("disconnected", "reconnect"): "running",
    ("disconnected", "running"): "running",
    ("disconnected", "paused"): "paused",
    ("disconnected", "finished"): "finished",
    ("disconnected", "disconnect"): "disconnected",
    ("finished", "disconnect"): "finished",
    ("finished", "finished"): "finished",
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
    return status != "finished"
