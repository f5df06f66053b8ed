"""One monitor's run across every ``fit()`` and ``watch()`` block: an explicit state machine.

The Keras callback and the loop hook are two doors into this one lifecycle::

    idle / interrupted / finished / disabled --begin--> training
    training --end-------> idle          (fit() returned, the with-block ended)
    training --interrupt-> interrupted   (KeyboardInterrupt, another callback's error)
    training --stop------> finished      (stop from the page)
    idle / interrupted / training --finish--> finished   (close(), interpreter exit)
    any --disable--> disabled            (the monitor itself failed; training goes on)

A run is one session (one transport, one run on the server) for as long as the same
hook (same model and optimizer) trains: a later ``begin`` continues it with the next
step number. ``finished`` and ``disabled`` are left by ``begin`` with a new run.

No transition waits for the server: ``end`` and ``interrupt`` only queue the last
steps and the new state. Whatever is still buffered is delivered by the sender in
the background, across fits, and at interpreter exit ``flush_at_exit`` waits at
most ``flush_timeout`` and prints one line for what could not be delivered.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import time
import warnings
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from gradwatch.protocol import TrainerState

if TYPE_CHECKING:
    from .multi_optimizer import AnyHook
    from .session import RunSession


class Phase(str, Enum):
    IDLE = "idle"
    TRAINING = "training"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    DISABLED = "disabled"


_ANY = frozenset(Phase)
_RESTING = frozenset({Phase.IDLE, Phase.INTERRUPTED})
# event -> (phases it may happen in, phase it leads to)
_MOVES: dict[str, tuple[frozenset[Phase], Phase]] = {
    "begin": (_ANY - {Phase.TRAINING}, Phase.TRAINING),
    "end": (frozenset({Phase.TRAINING}), Phase.IDLE),
    "interrupt": (frozenset({Phase.TRAINING}), Phase.INTERRUPTED),
    "stop": (frozenset({Phase.TRAINING}), Phase.FINISHED),
    "finish": (_RESTING | {Phase.TRAINING}, Phase.FINISHED),
    "disable": (_ANY, Phase.DISABLED),
}
# the run's state on the server after each event (``disable`` says nothing more)
_REPORTED: dict[str, TrainerState] = {
    "end": "idle",
    "interrupt": "interrupted",
    "stop": "finished",
    "finish": "finished",
}

OpenSession = Callable[[Any, Any, "AnyHook"], "RunSession"]


class InvalidMove(RuntimeError):
    pass


class RunLifecycle:
    """Constructed idle with how to open a session; ``begin`` / ``step`` / ``end`` drive it.

    ``open_session(model, optimizer, hook)`` returns a started ``RunSession``; it is
    called on the first step whose statistics exist. Every transition is taken under
    one lock: the end of a fit may be noticed on the training thread or by a watchdog.
    """

    #: Seconds ``end`` waits at most for a connected server to take the last steps
    #: (a healthy local server needs a few ms); never when the server is away.
    END_DRAIN = 0.05

    def __init__(self, open_session: OpenSession, flush_timeout: float) -> None:
        self._open_session = open_session
        self.flush_timeout = flush_timeout
        self.phase = Phase.IDLE
        self.session: RunSession | None = None
        self.hook: AnyHook | None = None
        self._model: Any = None
        self._optimizer: Any = None
        self._on_leave: Callable[[], None] | None = None
        self._next_step = self._begun_at = 0
        self._warned = False
        self._retired: list[RunSession] = []  # earlier runs of this monitor, still delivering
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ transitions

    def begin(self, hook: AnyHook, model: Any, optimizer: Any, next_step: int, on_leave: Callable[[], None]) -> None:
        """A fit or loop starts at ``next_step``; ``on_leave`` undoes what its door installed."""
        with self._lock:
            if self.phase is Phase.TRAINING:
                self.interrupt()  # the previous one ended without saying so
            if (hook is not self.hook and not self._continues(hook, model)) or self.phase in (
                Phase.FINISHED,
                Phase.DISABLED,
            ):
                self._retire()  # another model, or a run that ended: a new run
            self._move("begin")
            self.hook, self._model, self._optimizer, self._on_leave = hook, model, optimizer, on_leave
            self._next_step = self._begun_at = next_step
            if self.session is not None:
                self.session.resume(next_step)

    @property
    def optimizer(self) -> Any:
        """The optimizer of the fit or loop that began last."""
        return self._optimizer

    def next_step_for(self, model: Any) -> int:
        """The step a fit or loop of ``model`` starts at to continue this run (0: it would start a new one)."""
        with self._lock:
            if self.session is None or model is not self._model or self.phase in (Phase.FINISHED, Phase.DISABLED):
                return 0
            return self._next_step

    def _continues(self, hook: AnyHook, model: Any) -> bool:
        """The same model with another hook (recompiled with a new optimizer, or a layer made trainable):
        the same run goes on, its watched variables may change (``RunSession.switch``)."""
        from .optimizer_hook import OptimizerHook  # a plain hook: a GAN's groups are a run of their own

        plain = isinstance(hook, OptimizerHook) and isinstance(self.hook, OptimizerHook)
        return plain and self.session is not None and model is self._model

    def step(
        self, next_step: int, epoch: int, loss: float | None = None, rows: Any = None, between_steps: bool = True
    ) -> bool:
        """After the step ``next_step - 1`` (training thread); True when training should stop.

        ``between_steps``: False inside a compiled step's host call (``RunSession.after_steps``)."""
        if self.phase is not Phase.TRAINING:
            return False
        self._next_step = next_step
        try:
            session = self.session
            if session is None:
                assert self.hook is not None
                if self.hook.stats is None:
                    return False
                session = self.session = self._open_session(self._model, self._optimizer, self.hook)
                session.expect_from(self._begun_at)
                _register(self)
            elif self.hook is not None and self.hook.stats is not None and self.hook.stats is not session.stats:
                session.switch(self.hook.stats, self.hook.origin, self._begun_at)  # the run goes on
            return session.after_steps(next_step, epoch, loss, rows, between_steps)
        except Exception as err:
            self.disable(f"monitoring failed ({type(err).__name__}: {err})")
            return False

    def end(self, final: bool = False) -> None:
        """The fit or loop returned normally; ``final``: and this run trains no more.

        A stop from the page finishes the run too.
        """
        with self._lock:
            if self.phase is not Phase.TRAINING:
                return  # disabled (or noticed as interrupted) meanwhile
            stopped = self.session is not None and self.session.control.stop_requested
            self._settle("stop" if stopped or final else "end")
            session = self.session
        if session is None:
            return
        if stopped or final:
            # Nothing more will train in this run: let the sender deliver the rest (at most
            # flush_timeout) and end, instead of holding a connection until the interpreter exits.
            threading.Thread(target=_close, args=(session, self.flush_timeout), daemon=True).start()
        else:
            session.transport.drain(self.END_DRAIN)

    def interrupt(self, still: Callable[[], bool] = lambda: True) -> None:
        """The fit or loop ended by an exception: restore, and say so.

        ``still()`` (evaluated under the lock) tells whether it is the same fit that ended.
        """
        with self._lock:
            if self.phase is Phase.TRAINING and still():
                self._settle("interrupt")

    def finish(self, timeout: float | None = None) -> bool:
        """End the run for good and deliver within ``timeout`` (default ``flush_timeout``); True if all went."""
        with self._lock:
            if self.phase is Phase.TRAINING:
                self.interrupt()
            if self.phase in _RESTING:
                self._settle("finish")
            sessions = self._sessions()
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        stuck = [s for s in sessions if not s.close(max(0.0, deadline - time.monotonic()))]
        _say_undelivered(stuck)
        return not stuck

    def disable(self, reason: str) -> None:
        """The monitor failed: warn once, stop sending, leave training as it was."""
        with self._lock:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"gradwatch: {reason}; training continues without monitoring", RuntimeWarning, stacklevel=4
                )
            self._leave()
            self._move("disable")
            session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close(0.0)

    # ------------------------------------------------------------------ internals

    def _move(self, event: str) -> None:
        allowed, target = _MOVES[event]
        if self.phase not in allowed:
            raise InvalidMove(f"gradwatch: cannot {event} a run that is {self.phase.value}")
        self.phase = target

    def _settle(self, event: str) -> None:
        """Leave the training phase (or a resting one) by ``event``, restoring first, then report."""
        self._leave()
        self._move(event)
        if self.session is None:
            return
        try:
            self.session.settle(self._next_step - 1, _REPORTED[event])
        except Exception as err:
            self.disable(f"could not record the end of training ({type(err).__name__}: {err})")

    def _leave(self) -> None:
        on_leave, self._on_leave = self._on_leave, None
        if on_leave is not None:
            on_leave()

    def _retire(self) -> None:
        """The current run is over (another model, or it finished): let its sender deliver the rest."""
        if self.phase in _RESTING and self.session is not None:
            self._settle("finish")
        if self.session is not None:
            self._retired.append(self.session)
        self.session, self.hook = None, None
        self._warned = False

    def _sessions(self) -> list[RunSession]:
        """This monitor's sessions not closed yet."""
        every = [*self._retired, *([self.session] if self.session is not None else [])]
        return [s for s in every if not s.transport.closed]


# ---------------------------------------------------------------------- interpreter exit

_OPEN: list[RunLifecycle] = []  # with a session, flushed (and finished) at exit
_OPEN_LOCK = threading.Lock()


def _register(life: RunLifecycle) -> None:
    with _OPEN_LOCK:
        if not _OPEN:
            atexit.register(flush_at_exit)
        if all(other is not life for other in _OPEN):
            _OPEN.append(life)


def flush_at_exit(timeout: float | None = None) -> None:
    """Finish every open run and deliver within ``timeout`` (default: the largest ``flush_timeout``).

    Prints one line for what could not be delivered. Registered with ``atexit``.
    """
    with _OPEN_LOCK:
        lives = list(_OPEN)
        _OPEN.clear()
    if not lives:
        return
    deadline = time.monotonic() + (max(life.flush_timeout for life in lives) if timeout is None else timeout)
    for life in lives:
        with contextlib.suppress(Exception), life._lock:
            if life.phase is Phase.TRAINING:
                life.interrupt()  # the interpreter is ending inside a fit (an uncaught error)
            if life.phase in _RESTING and life.session is not None:
                life._settle("finish")
    sessions = [s for life in lives for s in life._sessions()]
    _say_undelivered([s for s in sessions if not s.close(max(0.0, deadline - time.monotonic()))])


def _close(session: RunSession, timeout: float) -> None:
    if not session.close(timeout):
        _say_undelivered([session])


def _say_undelivered(sessions: list[RunSession]) -> None:
    parts = [f"{s.transport.undelivered} reports of run {s.run_name!r}" for s in sessions if s.transport.undelivered]
    if parts:
        url = sessions[0].transport.url
        print(f"gradwatch: could not deliver {', '.join(parts)} to {url}; they are lost", file=sys.stderr, flush=True)


__all__ = ["InvalidMove", "Phase", "RunLifecycle", "flush_at_exit"]
