"""The monitored train function of one model, swapped into ``model.train_function`` for a monitored fit.

``fit()`` builds (or reuses) ``model.train_function`` before ``on_train_begin``.
The first monitored fit builds a second one whose trace goes through the hook
(``train_step`` wrapped to see the batch, the optimizer's ``apply`` routed through
the statistics) and keeps it here; every monitored fit swaps it in and puts the
user's own back at the end, so a later fit with the monitor does not retrace and
one without runs the user's step, unmodified.

The hook's patches on the optimizer (``apply``, ``scale_loss``, its clipping
attributes) matter only while a step is traced, so they are installed around
each call of the monitored function and removed in a ``finally``: between two
steps, and after any exception, the optimizer is exactly as the user had it.

Keras calls ``on_train_end`` only when the epoch loop ends normally. The end of
a fit that raised is noticed three ways, whichever comes first: the exception
passes through the monitored function (a KeyboardInterrupt during a step); a
watchdog sees the ``fit`` frame gone from the training thread's stack (an error
in another callback); or the monitored function is called from a fit that never
began this monitor (a later fit without it), which then runs the user's function.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import keras

from .multi_optimizer import AnyHook
from .optimizer_hook import OptimizerHook
from .step_loss import StepLoss

#: Seconds between two looks of the watchdog at the training thread's stack.
WATCH_INTERVAL = 0.2


def _fit_frame(model: Any) -> types.FrameType | None:
    """The frame of the ``fit`` call of ``model`` running on this thread, if any."""
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(30):
        if frame is None:
            return None
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
            return frame
        frame = frame.f_back
    return None


def _executing(frame: types.FrameType) -> bool:
    """Is ``frame`` (of another thread) still executing?

    Walking the training thread's stack from ``sys._current_frames()`` (``f_back`` after ``f_back`` while that
    thread runs on) crashed the interpreter once in a full test run under CPython 3.11. ``frame.clear()``
    reads only the frame's own state: it refuses an executing frame (RuntimeError, nothing changed) and on a
    finished one releases the locals of a fit that is over anyway (Keras' ``fit`` frame, held by the
    traceback of the error that ended it).
    """
    try:
        frame.clear()
    except RuntimeError:
        return True
    return False


class FitSwap:
    """One model's monitored train function; ``enter`` for a fit, ``leave`` after it (idempotent)."""

    def __init__(self, model: Any, hook: AnyHook, on_abandoned: Callable[[Callable[[], bool]], None]) -> None:
        self.model = model
        self.hook = hook
        # The fit ended without on_train_end; called with a check that it is still the same fit.
        self._on_abandoned = on_abandoned
        self._user: Any = None  # the user's train function, restored at leave
        self._monitored: Any = None
        self._frame: types.FrameType | None = None
        self._active = False
        self._stop_watch = threading.Event()
        self.function = self._call  # one bound method, so that `model.train_function is self.function`

    def enter(self) -> None:
        """Swap the monitored function in for the fit running now (building it the first time)."""
        model = self.model
        current = model.train_function
        if current is not self.function and (current is not self._user or self._monitored is None):
            self._user = current  # first fit, or the user rebuilt it (compile() again)
            self._monitored = self._build()
        self._frame = _fit_frame(model)
        self._active = True
        model.train_function = self.function
        if self._frame is not None:
            self._stop_watch = threading.Event()
            threading.Thread(
                target=self._watch, args=(self._frame, self._stop_watch), name="gradwatch-fit-watch", daemon=True
            ).start()

    def fit_callbacks(self) -> list[Any]:
        """The callbacks of the fit running now (Keras' ``CallbackList`` in its frame), if it was found."""
        callbacks = self._frame.f_locals.get("callbacks") if self._frame is not None else None
        return list(getattr(callbacks, "callbacks", None) or [])

    def leave(self) -> None:
        """Put the user's train function back; the optimizer is already as it was."""
        self._active = False
        self._frame = None
        self._stop_watch.set()
        if self.model.train_function is self.function:
            self.model.train_function = self._user

    def _build(self) -> Any:
        model, hook = self.model, self.hook
        original_train_step = model.train_step

        def train_step(data: Any) -> Any:
            # Only to see the batch (for finding where a non-finite step came from) and the step's loss.
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            hook.note_inputs((x, y))
            loss = StepLoss(model)
            loss.before()
            result = original_train_step(data)
            if isinstance(hook, OptimizerHook):
                hook.end_step(loss.own())
            else:
                hook.end_step()  # a train step may update with several optimizers: one step all the same
            return result

        # make_train_function takes model.train_step as it is now into the function it makes.
        patches: dict[str, Any] = {"train_step": train_step}
        convert = getattr(model, "_autoconvert_optionals", None)
        if isinstance(hook, OptimizerHook) and convert is not None:
            # Keras wraps its (XLA-compiled, with jit_compile) one-step function with this, inside the
            # function that is not compiled: what runs there after the step costs XLA nothing.
            def autoconvert(step_function: Any) -> Any:
                one_step = convert(step_function)

                def after_step(data: Any) -> Any:
                    outputs = one_step(data)
                    hook.keep_outside(data)
                    return outputs

                return after_step

            hook.allow_keep_outside()
            patches["_autoconvert_optionals"] = autoconvert
        own = {name: vars(model)[name] for name in patches if name in vars(model)}  # set on the instance
        for name, value in patches.items():
            setattr(model, name, value)
        try:
            model.make_train_function(force=True)
            return model.train_function
        finally:
            for name in patches:
                if name in own:
                    setattr(model, name, own[name])
                else:
                    delattr(model, name)
            model.train_function = self._user

    def _call(self, iterator: Any) -> Any:
        if not self._active or (self._frame is not None and sys._getframe(1) is not self._frame):
            # A fit this monitor did not begin (or no fit at all): the user's own step.
            if self._active:
                self._on_abandoned(lambda: True)
            return self._user(iterator)
        self.hook.install()
        try:
            result = self._monitored(iterator)
        except BaseException:
            self.hook.uninstall()
            self._on_abandoned(lambda: True)
            raise
        self.hook.uninstall()
        return result

    def _watch(self, frame: types.FrameType, stop: threading.Event) -> None:
        while not stop.wait(WATCH_INTERVAL):
            if not _executing(frame):
                # Decided under the lifecycle's lock: a new fit may have begun meanwhile.
                self._on_abandoned(lambda: self._frame is frame)
                return
