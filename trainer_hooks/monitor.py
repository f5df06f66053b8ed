"""``GradientMonitor``: the Keras callback users add to ``model.fit``, the core's Keras door.

The options are a ``MonitorConfig`` (config.py); the run behind both this door and the loop
hook (``monitor.watch``, watch.py) is a ``MonitorCore`` (core.py).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras

from .config import OPTION_FIELDS, RESOLVED, MonitorConfig
from .core import STATS_RING, MonitorCore
from .fit_swap import FitSwap
from .lifecycle import Phase, RunLifecycle
from .multi_optimizer import AnyHook, AnyStats, find_optimizers
from .multi_worker import worker_count
from .optimizer_hook import OptimizerHook
from .snapshots import DEFAULT_EVERY, DEFAULT_KEEP, DEFAULT_MB
from .tuner_trial import find_trial
from .update_ratio import UpdateRatio

if TYPE_CHECKING:
    from .session import RunSession
    from .watch import Watch


def _given(value: Any, default: Any) -> bool:
    """Was an option passed with something other than its default? (An array compares elementwise.)"""
    try:
        return not (value is default or bool(value == default))
    except Exception:
        return True


class GradientMonitor(keras.callbacks.Callback):  # type: ignore[misc]  # Keras ships no type hints
    """Streams per-layer gradient health to a gradwatch server and obeys its commands.

    Args:
        server: the gradwatch server, e.g. ``"http://127.0.0.1:8765"``; ``None`` reads
            ``$GRADWATCH_SERVER`` (a notebook's embedded server sets it), else that default.
        token: access token; ``None`` reads ``$GRADWATCH_TOKEN``, else the token
            file that ``gradwatch serve`` writes on this machine.
        run_name: shown on the dashboard; defaults to ``model@host:pid``.
        every: report every ``every``-th step, and any step whose gradients or loss are not
            finite (statistics and clipping run on every step).
        clip_mode: ``"global_norm"``, ``"norm"`` (per variable) or ``"value"``.
        clip_threshold: initial threshold; ``None`` adopts the optimizer's
            ``global_clipnorm``/``clipnorm``/``clipvalue`` if set, else clips nothing
            until a threshold is set from the dashboard.
        guard_nonfinite: skip (and count) any step whose gradients or loss are not
            finite, so one bad batch cannot poison the weights.
        pause_on: alert kinds on which the server pauses the run automatically,
            e.g. ``("nonfinite", "exploding_gradients")``.
        update_ratio_every: ``None``: measure the update-to-weight ratio ‖Δw‖/‖w‖ per variable in the
            compiled step, every step; N: on the host instead, every N-th step (copies the weights);
            0: never.
        probe_data: a small fixed batch of inputs (at most 256 examples are used) for the
            activation probe (dead ReLU units, BatchNorm batch-vs-moving gap); ``None``: the
            probe takes the training batch of the steps it is due (at most 256 examples).
        probe_every: run the probe every N steps.
        max_buffer_mb: reports kept in memory while the server is unreachable; past it the
            oldest are written to a spool file under ``log_dir`` (up to ``spool_mb``), for
            ``gradwatch sync``; past that they are dropped and the gap is reported.
        mode: ``"online"`` (stream to the server) or ``"offline"`` (never contact a server: write
            the run to a file under ``log_dir`` for ``gradwatch sync``); ``None`` reads
            ``$GRADWATCH_MODE``, else online.
        log_dir: where run files go; ``None`` reads ``$GRADWATCH_LOG_DIR``, else ``~/.gradwatch/runs``.
        spool_mb: disk budget of one run's spool file in online mode (0: no spooling, drop as before).
        flush_timeout: seconds the interpreter's exit (or ``close()``) waits at most to deliver
            what is still buffered; ``fit()`` itself never waits for the server.
        rewind_on: alert kinds on which the server rewinds the run unattended: the newest snapshot taken
            before the alert's step is restored, the learning rate multiplied by ``rewind_lr_factor``, and
            training goes on (at most ``max_rewinds`` times per run; the next one pauses instead). Takes
            precedence over ``pause_on`` for the same kind.
        snapshot_every: keep a snapshot of the weights and optimizer state in host memory every N steps
            (after a step whose gradients, loss and weights were finite), to rewind to from the page or
            by ``rewind_on``; 0: none. ``snapshot_keep`` of them are kept, within ``snapshot_mb`` MiB.
        resume: continue a run after the process restarted (a preempted job resumed from its
            checkpoint): its id, or ``"auto"`` for the newest run of this ``run_name`` with the
            same variables. Restore the optimizer too, so that its step count goes on.

        config: every option above as one ``MonitorConfig`` (then pass no other argument).

    The callback never raises into training: any failure of the monitor itself
    is reported once with a warning and monitoring stops, training goes on.
    """

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        run_name: str | None = None,
        every: int = 1,
        clip_mode: str = "global_norm",
        clip_threshold: float | None = None,
        *,
        guard_nonfinite: bool = False,
        pause_on: Sequence[str] = (),
        update_ratio_every: int | None = None,
        probe_data: Any = None,
        probe_every: int = 100,
        max_buffer_mb: float = 64.0,
        flush_timeout: float = 10.0,
        resume: int | str | None = None,
        transport_options: dict[str, Any] | None = None,
        mode: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        spool_mb: float = 1024.0,
        rewind_on: Sequence[str] = (),
        rewind_lr_factor: float = 0.5,
        max_rewinds: int = 3,
        snapshot_every: int = DEFAULT_EVERY,
        snapshot_keep: int = DEFAULT_KEEP,
        snapshot_mb: float = DEFAULT_MB,
        config: MonitorConfig | None = None,
    ) -> None:
        # The arguments are MonitorConfig's fields one to one (a test holds them equal): read them
        # from locals() rather than spell every name a third time.
        arguments = locals()
        options = {f.name: arguments[f.name] for f in OPTION_FIELDS}
        super().__init__()
        if config is None:
            config = MonitorConfig(**options)
        else:
            # A field kept out of repr (the token) is named, never echoed.
            given = [
                f"{f.name}={options[f.name]!r}" if f.repr else f.name
                for f in OPTION_FIELDS
                if _given(options[f.name], f.default)
            ]
            if given:
                raise TypeError(
                    f"GradientMonitor(config=...) takes no other options, got {', '.join(given)}: set them on the "
                    "config instead, e.g. dataclasses.replace(config, every=10)"
                )
        #: Every option, validated (``MonitorConfig``); the monitor's run is ``core``.
        self.config = config
        self._start_fresh()

    def _start_fresh(self) -> None:
        """The run-time state: none of it is configuration."""
        self.core = MonitorCore(self.config)
        #: The one run of this monitor, across every fit() and watch() block (lifecycle.py): the core's.
        self.lifecycle: RunLifecycle = self.core.lifecycle
        self._fit: FitSwap | None = None  # the monitored train function of the model last fitted
        self._watches: dict[tuple[int, int], Watch] = {}
        self._steps, self._epoch, self._last_batch, self._fit_start = 0, 0, -1, 0
        self._warned_unused = False

    def __deepcopy__(self, memo: dict[int, Any]) -> GradientMonitor:
        """The same options, a run of its own (Keras Tuner copies the callbacks for every trial)."""
        clone = copy.copy(self)
        clone._start_fresh()
        return clone

    @property
    def stats(self) -> AnyStats | None:
        """The statistics of the run's session, once it opened."""
        return self.core.stats

    @property
    def session(self) -> RunSession | None:
        """The run's session once its first step was reported (it lives across fits)."""
        return self.lifecycle.session

    def close(self, timeout: float | None = None) -> bool:
        """End the run (shown as finished) and deliver what is buffered within ``timeout`` seconds
        (default ``flush_timeout``); True if everything went out. Done for you at interpreter exit.
        """
        return self.lifecycle.finish(timeout)

    # ------------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        try:
            self._begin()
        except Exception as err:
            self.lifecycle.disable(f"could not start monitoring ({type(err).__name__}: {err})")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._last_batch = -1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.lifecycle.phase is not Phase.TRAINING:
            return
        self._steps += batch - self._last_batch
        self._last_batch = batch
        loss = logs.get("loss") if logs else None
        try:
            stop = self.lifecycle.step(self._steps, self._epoch, loss if isinstance(loss, float) else None)
        except BaseException:  # a KeyboardInterrupt while paused: the fit ends here
            self.lifecycle.interrupt()
            raise
        if stop:
            self.model.stop_training = True
        if not self._warned_unused and self._fit is not None and self._fit.hook.stats is None:
            self._warn_if_unused()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            # A Keras Tuner trial's copy of the monitor trains once: its run is finished, not idle.
            self.lifecycle.end(final=self.core.trial is not None)
        except Exception as err:
            self.lifecycle.disable(f"could not finish cleanly ({type(err).__name__}: {err})")

    # ------------------------------------------------------------------ internals

    #: Steps after which a compiled optimizer that applied nothing is worth a warning.
    UNUSED_AFTER = 3

    def _begin(self) -> None:
        model = self.model
        strategy = getattr(model, "distribute_strategy", None)
        if worker_count(strategy) > 1:
            # fit() itself fails under it upstream (keras-team/keras#20585), and a stop
            # here would end only the chief's loop; watch() keeps the workers in step.
            raise NotImplementedError(
                "the callback does not support MultiWorkerMirroredStrategy with several workers; "
                "use monitor.watch(model, optimizer) in a hand-written loop"
            )
        core, fit = self.core, self._fit
        if fit is None or fit.model is not model or fit.hook.optimizer is not model.optimizer:
            # Rows kept between host reads: at least one execution's worth of steps.
            ring = max(int(getattr(model, "steps_per_execution", 1) or 1), STATS_RING)
            optimizers = find_optimizers(model)
            hook: AnyHook
            if len(optimizers) > 1:  # a train_step with optimizers of its own (a GAN's)
                hook = core.new_group_hook(model, optimizers, ring)
            else:
                hook = core.new_hook(model, model.optimizer, ring)
            fit = self._fit = FitSwap(model, hook, self.lifecycle.interrupt)
            if isinstance(hook, OptimizerHook) and hook.prepare_if_built(model):
                assert hook.stats is not None
                every = self.config.update_ratio_every
                if every:  # measured on the host: kept now, so the first step counts too
                    core.update_ratio = UpdateRatio(hook.stats.variables, every)
        next_step = core.begin(fit.hook, model, model.optimizer, on_leave=fit.leave)
        fit.enter()
        if self.lifecycle.session is None:
            core.trial = find_trial(fit.fit_callbacks())
            if core.update_ratio is not None:
                core.update_ratio.keep(next_step)
        self._steps = self._fit_start = next_step
        self._epoch, self._last_batch = 0, -1

    def _warn_if_unused(self) -> None:
        """A train_step that applies its gradients with other optimizers (a GAN's) reports nothing: say so."""
        if self._steps - self._fit_start < self.UNUSED_AFTER:
            return
        self._warned_unused = True
        warnings.warn(
            f"gradwatch: after {self._steps - self._fit_start} steps the compiled optimizer "
            f"({type(self.model.optimizer).__name__}) has applied no gradients, so nothing is monitored: this "
            "train_step updates the weights with an optimizer the monitor cannot find (it watches `model.optimizer` "
            "and any optimizer held in an attribute of the model, like a GAN's `self.d_optimizer`). Keep the "
            "optimizer in such an attribute, or use `with monitor.watch(model, optimizer) as watch:` and call "
            "`watch.apply_gradients(grads, variables)` instead of that optimizer's `apply_gradients`",
            RuntimeWarning,
            stacklevel=2,
        )

    def watch(self, model: Any, optimizer: Any) -> Watch:
        """Monitor a hand-written ``tf.GradientTape`` loop; see ``Watch``.

        The same ``Watch`` for the same model and optimizer: entering it again (once per
        epoch, say) continues the run, also inside a ``tf.function`` traced the first time.
        """
        from .watch import Watch

        key = (id(model), id(optimizer))
        watch = self._watches.get(key)
        if watch is None or watch.model is not model or watch.optimizer is not optimizer:
            watch = self._watches[key] = Watch(self.core, model, optimizer)
        return watch


def _option(name: str) -> property:
    """``monitor.<name>``, read as before the config: the value in effect; set, it says how to change it."""

    def get(self: GradientMonitor) -> Any:
        return getattr(self.config, RESOLVED.get(name, name))

    def refuse(self: GradientMonitor, value: Any) -> None:
        # Read by the hooks made at the first fit: a later change would be half applied.
        raise AttributeError(
            f"monitor.{name} is read-only; make the monitor with it: "
            f"GradientMonitor(config=dataclasses.replace(monitor.config, {name}=...))"
        )

    return property(get, refuse, doc=f"The option ``{name}`` in effect (``config.{RESOLVED.get(name, name)}``).")


# Properties rather than __getattr__/__setattr__: setting the monitor's own attributes each batch stays plain.
for _field in OPTION_FIELDS:
    setattr(GradientMonitor, _field.name, _option(_field.name))
del _field
