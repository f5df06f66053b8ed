"""Run control on the trainer side: an explicit running / paused / stopping state machine.

Commands arrive on the transport's thread (``submit``); they are applied on the
training thread at a batch boundary (``apply_pending``), because only there is
it safe to touch the clip variables or to block the loop. Every command gets
exactly one acknowledgement: applied (with the first step it affected) or
rejected (with why).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from enum import Enum

from gradwatch.protocol import COMMANDS, TRAINER_STATES, Ack, Command, CommandMessage, Status


class ControlState(str, Enum):
    """Where the control state machine is: the protocol's ``TrainerState`` words it reports (``Status.state``),
    and ``stopping``, its own (a stop applied, ``fit()`` not yet ended; the server hears ``finished`` then)."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"


if not {s.value for s in ControlState} - {"stopping"} <= set(TRAINER_STATES):
    raise TypeError(f"ControlState {[s.value for s in ControlState]} names a state the protocol does not")

# command type -> (states it may be applied in, state it leads to); a new command of the protocol
# (gradwatch.protocol.CommandType, COMMAND_PARAMS) gets its line here and its handling in RunControl._apply.
_TRANSITIONS: dict[str, tuple[frozenset[ControlState], ControlState | None]] = {
    "pause": (frozenset({ControlState.RUNNING}), ControlState.PAUSED),
    "resume": (frozenset({ControlState.PAUSED}), ControlState.RUNNING),
    "stop": (frozenset({ControlState.RUNNING, ControlState.PAUSED}), ControlState.STOPPING),
    "set_clip": (frozenset({ControlState.RUNNING, ControlState.PAUSED}), None),
    "set_lr": (frozenset({ControlState.RUNNING, ControlState.PAUSED}), None),
    "rewind": (frozenset({ControlState.RUNNING, ControlState.PAUSED}), None),
}
if tuple(_TRANSITIONS) != COMMANDS:
    raise TypeError(f"the trainer's commands {tuple(_TRANSITIONS)} differ from gradwatch.protocol.COMMANDS {COMMANDS}")


class PauseInstead(ValueError):
    """Raised by a command's handler: the command is refused (with this message) and the run pauses."""


class RunControl:
    """Thread-safe holder of the run state and the inbox of commands.

    ``on_clip`` is called on the training thread with (mode, threshold, group) for
    ``set_clip`` (mode ``None``: keep the current one; group ``None``: every optimizer),
    ``on_lr`` with (lr, group) for ``set_lr``, ``on_rewind`` with the command for ``rewind``
    (it returns the acknowledgement's detail); ``send`` hands an acknowledgement or a status change to
    the transport.
    """

    def __init__(
        self,
        on_clip: Callable[[str | None, float, str | None], None],
        send: Callable[[Ack | Status], None],
        on_lr: Callable[[float, str | None], None] | None = None,
        on_rewind: Callable[[Command], str] | None = None,
    ) -> None:
        self._on_clip = on_clip
        self._on_lr = on_lr
        self._on_rewind = on_rewind
        self._send = send
        self._state = ControlState.RUNNING
        self._inbox: collections.deque[CommandMessage] = collections.deque()
        self._cond = threading.Condition()

    @property
    def state(self) -> ControlState:
        return self._state

    @property
    def stop_requested(self) -> bool:
        return self._state in (ControlState.STOPPING, ControlState.FINISHED)

    def submit(self, message: CommandMessage) -> None:
        """Queue a command (any thread); wakes a paused training loop."""
        with self._cond:
            self._inbox.append(message)
            self._cond.notify_all()

    @property
    def has_pending(self) -> bool:
        """Commands wait to be applied (a cheap, lock-free look from the training thread)."""
        return bool(self._inbox)

    def apply_pending(self, next_step: int) -> None:
        """Apply queued commands (training thread). ``next_step`` is the first step they affect."""
        while self._inbox:
            message = self._inbox.popleft()
            self._apply(message.id, message.command, next_step)

    def wait_while_paused(self, next_step: int, poll: float = 0.5) -> None:
        """Block the training thread while paused, still applying commands (resume, stop, set_clip)."""
        self.apply_pending(next_step)
        while self._state is ControlState.PAUSED:
            with self._cond:
                if not self._inbox:
                    self._cond.wait(poll)
            self.apply_pending(next_step)

    def finish(self) -> None:
        """Training ended; commands still queued are rejected so none stays pending forever."""
        self._state = ControlState.FINISHED
        while self._inbox:
            message = self._inbox.popleft()
            self._send(Ack(type="ack", id=message.id, state="rejected", detail="training had already ended"))
        with self._cond:
            self._cond.notify_all()

    def _apply(self, command_id: int, command: Command, next_step: int) -> None:
        allowed, target = _TRANSITIONS[command.type]
        if self._state not in allowed:
            why = f"cannot {command.type} while {self._state.value}"
            self._send(Ack(type="ack", id=command_id, state="rejected", detail=why))
            return
        detail: str | None = None
        try:
            if command.type == "set_clip":
                assert command.threshold is not None  # guaranteed by Command's validation
                self._on_clip(command.mode, float(command.threshold), command.group)
            elif command.type == "set_lr":
                assert command.lr is not None
                if self._on_lr is None:
                    raise ValueError("this trainer cannot change its learning rate")
                self._on_lr(float(command.lr), command.group)
            elif command.type == "rewind":
                if self._on_rewind is None:
                    raise ValueError("this run keeps no snapshots to rewind to (GradientMonitor(snapshot_every=...))")
                detail = self._on_rewind(command)
        except ValueError as err:
            self._send(Ack(type="ack", id=command_id, state="rejected", detail=str(err)[:1000]))
            if isinstance(err, PauseInstead) and self._state is ControlState.RUNNING:
                self._state = ControlState.PAUSED
                self._send(Status(type="status", state="paused", step=next_step))
            return
        self._send(Ack(type="ack", id=command_id, state="applied", applied_step=next_step, detail=detail))
        if target is not None:
            self._state = target
            if target in (ControlState.PAUSED, ControlState.RUNNING):
                self._send(Status(type="status", state=target.value, step=next_step))
