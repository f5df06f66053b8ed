"""``GradientMonitor``: the Keras callback users add to ``model.fit``."""

from __future__ import annotations

import copy
import math
import os
import socket
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from gradwatch.protocol import ALERT_KINDS, trainer_ws_url
from gradwatch.tokens import configured_server, resolve_server, resolve_token

from .fit_swap import FitSwap
from .graph_stats import GradientStats, Layout
from .lifecycle import Phase, RunLifecycle
from .model_facts import model_facts
from .multi_optimizer import AnyHook, AnyStats, GroupedStats, MultiHook, find_optimizers, group_meta, group_stats
from .multi_worker import worker_count
from .optimizer_hook import OptimizerHook, learning_rate_variable, optimizer_clipping
from .origin import OriginFinder
from .probe import Prober
from .rewind import RewindOptions
from .session import RunSession, validate_clip
from .snapshots import DEFAULT_EVERY, DEFAULT_KEEP, DEFAULT_MB, state_variables
from .spool import resolve_log_dir
from .tuner_trial import TrialInfo, find_trial
from .update_ratio import UpdateRatio

if TYPE_CHECKING:
    from .watch import Watch


#: ``GradientMonitor(mode=...)``: stream to the server, or write a run file for ``gradwatch sync``.
MODES = ("online", "offline")
MODE_ENV = "GRADWATCH_MODE"
#: Statistics rows the graph keeps for the host (it reads every ``STATS_RING // 2`` steps at most).
STATS_RING = 16
#: In an XLA-compiled loop the host reads the ring only when the loop reads ``watch.stop_requested``
#: (XLA compiles no host call), so there it holds up to this many rows, within ``XLA_RING_BYTES``: a loop
#: that looks every few hundred steps (keras-io logs every N) loses none. Each step writes one row in place.
XLA_RING_ROWS = 1024
XLA_RING_BYTES = 8 * 2**20


def ring_rows(ring: int, n_vars: int, xla: bool) -> int:
    """Rows of a statistics ring for ``n_vars`` variables: ``ring``, more in an XLA-compiled loop."""
    if not xla:
        return ring
    row_bytes = Layout(n_vars).width * 8
    return max(ring, min(XLA_RING_ROWS, XLA_RING_BYTES // row_bytes))


def find_batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer in ``model``, nested ones included, in model order."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def default_run_name(model: Any) -> str:
    return f"{model.name}@{socket.gethostname()}:{os.getpid()}"


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
    ) -> None:
        super().__init__()
        where = "mode" if mode is not None else f"${MODE_ENV}"
        mode = mode if mode is not None else os.environ.get(MODE_ENV) or "online"
        if mode not in MODES:
            raise ValueError(f"{where}={mode!r} must be one of {MODES} (offline: write a run file for gradwatch sync)")
        if isinstance(spool_mb, bool) or not (isinstance(spool_mb, (int, float)) and math.isfinite(spool_mb)
                                                 and spool_mb >= 0):
            raise ValueError(f"spool_mb={spool_mb!r} must be a number of MiB >= 0 (0: no spool file)")
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"log_dir={log_dir!r} must be a folder path (str or pathlib.Path)")
        self._prove_server = not configured_server(server)  # the default local one proves it knows the token
        server = resolve_server(server)
        trainer_ws_url(server)  # validates the URL now, with a clear message
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a whole number >= 1 (report every N-th step)")
        validate_clip(clip_mode, clip_threshold)
        if not (isinstance(max_buffer_mb, (int, float)) and math.isfinite(max_buffer_mb) and max_buffer_mb > 0):
            raise ValueError(f"max_buffer_mb={max_buffer_mb!r} must be a positive number of MiB")
        run_id_ok = isinstance(resume, int) and not isinstance(resume, bool) and resume >= 1
        if resume is not None and resume != "auto" and not run_id_ok:
            raise ValueError(f"resume={resume!r} must be None, a run id (a whole number >= 1) or 'auto'")
        if not (isinstance(flush_timeout, (int, float)) and math.isfinite(flush_timeout) and flush_timeout >= 0):
            raise ValueError(f"flush_timeout={flush_timeout!r} must be a number of seconds >= 0, e.g. 10")
        if run_name is not None and not (isinstance(run_name, str) and 0 < len(run_name) <= 200):
            raise ValueError(f"run_name={run_name!r} must be a non-empty string of at most 200 characters")
        unknown = [k for k in pause_on if k not in ALERT_KINDS] if not isinstance(pause_on, str) else [pause_on]
        if unknown:
            raise ValueError(f"pause_on={pause_on!r}: {unknown} not alert kinds; choose from {ALERT_KINDS} (a tuple)")
        self.rewind = RewindOptions(tuple(rewind_on), rewind_lr_factor, max_rewinds, snapshot_every, snapshot_keep,
                                    snapshot_mb)
        counts = [("probe_every", probe_every, 1)]
        if update_ratio_every is not None:
            counts.append(("update_ratio_every", update_ratio_every, 0))
        for name, value, low in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be a whole number >= {low}")
        self.server = server
        self.token = token
        self.run_name = run_name
        self.every = every
        self.clip_mode = clip_mode
        self.clip_threshold = clip_threshold
        self.max_buffer_mb = max_buffer_mb
        self.flush_timeout = flush_timeout
        self.resume = resume
        self.transport_options = transport_options
        self.mode = mode
        self.log_dir = resolve_log_dir(log_dir)
        self.spool_mb = spool_mb
        self.guard_nonfinite = bool(guard_nonfinite)
        self.pause_on = tuple(pause_on)
        self.update_ratio_every = update_ratio_every
        self.probe_data = probe_data
        self.probe_every = probe_every
        self._clip: tuple[str, float | None] = (clip_mode, clip_threshold)
        self._start_fresh()

    def _start_fresh(self) -> None:
        """The run-time state: none of it is configuration."""
        self.stats: AnyStats | None = None
        #: The one run of this monitor, across every fit() and watch() block (lifecycle.py).
        self.lifecycle = RunLifecycle(self.new_session, self.flush_timeout)
        self._fit: FitSwap | None = None  # the monitored train function of the model last fitted
        self._watches: dict[tuple[int, int], Watch] = {}
        self._update_ratio: UpdateRatio | None = None
        self._steps, self._epoch, self._last_batch, self._fit_start = 0, 0, -1, 0
        self._warned_unused = False
        self._trial: TrialInfo | None = None  # the Keras Tuner trial this monitor's fit belongs to

    def __deepcopy__(self, memo: dict[int, Any]) -> GradientMonitor:
        """The same arguments, a run of its own (Keras Tuner copies the callbacks for every trial)."""
        clone = copy.copy(self)
        clone._start_fresh()
        return clone

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
            self.lifecycle.end(final=self._trial is not None)
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
        fit = self._fit
        if fit is None or fit.model is not model or fit.hook.optimizer is not model.optimizer:
            # Rows kept between host reads: at least one execution's worth of steps.
            ring = max(int(getattr(model, "steps_per_execution", 1) or 1), STATS_RING)
            optimizers = find_optimizers(model)
            hook: AnyHook
            if len(optimizers) > 1:  # a train_step with optimizers of its own (a GAN's)
                hook = self.new_group_hook(model, optimizers, ring)
            else:
                hook = self.new_hook(model, model.optimizer, ring)
            fit = self._fit = FitSwap(model, hook, self.lifecycle.interrupt)
            if isinstance(hook, OptimizerHook) and hook.prepare_if_built(model):
                assert hook.stats is not None
                if self.update_ratio_every:  # measured on the host: kept now, so the first step counts too
                    self._update_ratio = UpdateRatio(hook.stats.variables, self.update_ratio_every)
        stats = fit.hook.stats
        # A recompile's new optimizer counts from 0: the run's numbering goes on all the same.
        next_step = max(int(model.optimizer.iterations.numpy()), self.lifecycle.next_step_for(model))
        if stats is not None:  # continue the run's numbering, also past fits without the monitor
            next_step = max(next_step, int(stats.step.numpy()))
            stats.step.assign(next_step)
        self.lifecycle.begin(fit.hook, model, model.optimizer, next_step, on_leave=fit.leave)
        fit.enter()
        if self.lifecycle.session is None:
            self._trial = find_trial(fit.fit_callbacks())
        if self.lifecycle.session is None and self._update_ratio is not None:
            self._update_ratio.keep(next_step)
        self._steps = self._fit_start = next_step
        self._epoch, self._last_batch = 0, -1

    def _run_name(self, model: Any) -> str:
        name = self.run_name or default_run_name(model)
        return name if self._trial is None else f"{name} · trial {self._trial.trial_id}"[:200]

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

    # ------------------------------------------------------------------ shared with Watch

    def new_hook(self, model: Any, optimizer: Any, ring: int = STATS_RING) -> OptimizerHook:
        """An (uninstalled) hook whose statistics cover ``model`` and clip as configured."""
        mode, threshold = self.clip_mode, self.clip_threshold
        adopted = optimizer_clipping(optimizer)
        if adopted is not None:
            if threshold is None:
                mode, threshold = adopted
            else:
                warnings.warn(
                    f"gradwatch: the optimizer clips with {adopted[0]}={adopted[1]}; using clip_threshold="
                    f"{threshold} ({mode}) instead, and the optimizer's own clipping is switched off for this run",
                    stacklevel=4,
                )
        self._clip = (mode, threshold)

        def make_stats(variables: list[Any]) -> GradientStats:
            # Runs while the first step is traced: the model is built by then.
            first_step = max(int(optimizer.iterations.numpy()), self.lifecycle.next_step_for(model))
            rows = ring_rows(ring, len(variables), hook.traced_in_xla)
            return GradientStats(
                variables, find_batchnorm_layers(model), mode, threshold, rows, first_step,
                update_ratio=self.update_ratio_every is None,
            )

        hook = OptimizerHook(
            optimizer,
            make_stats,
            self.every,
            guard_nonfinite=self.guard_nonfinite,
            # Without probe_data the probe replays the training batch of the steps it is due.
            make_origin=lambda: OriginFinder(model, sample_every=self.probe_every if self.probe_data is None else 0),
            strategy=getattr(model, "distribute_strategy", None),
        )
        return hook

    def new_group_hook(self, model: Any, optimizers: dict[str, Any], ring: int) -> MultiHook:
        """An (uninstalled) hook over every optimizer of ``model``, one group each.

        The run has one clip setting for every group: ``clip_threshold``, else the first
        group optimizer's own clipping.
        """
        adopted = next((c for o in optimizers.values() if (c := optimizer_clipping(o)) is not None), None)
        mode, threshold = self.clip_mode, self.clip_threshold
        if threshold is None and adopted is not None:
            mode, threshold = adopted
        self._clip = (mode, threshold)

        def make_stats(variables: list[Any], step: tf.Variable) -> GradientStats:
            return GradientStats(variables, (), mode, threshold, ring, step=step,
                                 update_ratio=self.update_ratio_every is None)

        return MultiHook(
            model.optimizer,
            optimizers,
            make_stats,
            bn_layers=find_batchnorm_layers(model),
            guard_nonfinite=self.guard_nonfinite,
            strategy=getattr(model, "distribute_strategy", None),
        )

    def new_session(self, model: Any, optimizer: Any, hook: AnyHook) -> RunSession:
        """A started session streaming the statistics of ``hook`` (built by now) for ``model``."""
        stats = hook.stats
        assert stats is not None
        self.stats = stats
        strategy = hook.strategy  # the model's, as the hook was made for it
        # What the trainer could not do on this model: one line each, in the run's info.
        notes: dict[str, str] = {} if hook.origin is None else hook.origin.notes
        prober = None
        try:  # probe_data, or else the training batches the step keeps (hook.origin.samples)
            samples = hook.origin.samples if hook.origin is not None else None
            prober = Prober(model, self.probe_data, stats.bn_layers, samples)
            notes.update(prober.notes)
            prober = prober if prober.active else None
        except Exception as err:
            notes["probe"] = f"the activation probe is off ({type(err).__name__}: {err})"

        optimizers = hook.optimizers if isinstance(hook, MultiHook) else {"optimizer": optimizer}
        groups = stats.group_variables if isinstance(stats, GroupedStats) else None

        def lr_variables() -> list[Any]:
            now = optimizers if groups is not None else {"optimizer": self.lifecycle.optimizer or optimizer}
            return [learning_rate_variable(o) for o in now.values()]

        session_ref: list[RunSession] = []  # the rewinder sets a threshold through the session made below
        rewinder, rewind_notes = self.rewind.rewinder(
            state_variables(model, optimizers.values()), lr_variables,
            lambda mode, threshold, group: session_ref[0].set_clip(mode, threshold, group),
        )
        notes.update(rewind_notes)

        def set_lr(lr: float, group: str | None = None) -> None:
            if group is not None:
                group_stats(stats, group)  # a clear error for a group this run does not have
            names = [group] if group is not None else list(groups or optimizers)
            # A recompile within the run brings a new optimizer: the one training now is set.
            now = optimizers if groups is not None else {"optimizer": self.lifecycle.optimizer or optimizer}
            variables = [learning_rate_variable(now[name]) for name in names]
            if any(variable is None for variable in variables):
                raise ValueError("the learning rate is a schedule or callable here; it cannot be set from the page")
            for variable in variables:
                variable.assign(lr)

        session = RunSession(
            stats=stats,
            run_name=self._run_name(model),
            server=self.server,
            token=resolve_token(self.token),
            every=self.every,
            clip_mode=self._clip[0],
            clip_threshold=self._clip[1],
            meta={
                "model": model.name,
                "optimizer": ", ".join(f"{n}: {type(o).__name__}" for n, o in optimizers.items() if n in groups)
                if groups is not None
                else type(optimizer).__name__,
                **({"optimizer_groups": group_meta(stats)} if isinstance(stats, GroupedStats) else {}),
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
                "replicas": int(getattr(strategy, "num_replicas_in_sync", 1)),
                "workers": worker_count(strategy),  # only the chief streams (multi_worker.py)
                **(self._trial.meta if self._trial is not None else {}),
                **notes,
            },
            max_buffer_bytes=int(self.max_buffer_mb * 2**20),
            resume=self.resume,
            transport_options={"prove_server": self._prove_server, **(self.transport_options or {})},
            log_dir=self.log_dir,
            offline=self.mode == "offline",
            spool_budget_bytes=int(self.spool_mb * 2**20),
            pause_on=self.pause_on,
            guard_nonfinite=self.guard_nonfinite,
            set_lr=set_lr,
            prober=prober,
            probe_every=self.probe_every,
            origin=hook.origin,
            update_ratio=self._host_update_ratio(stats),
            facts=lambda: model_facts(model, stats.bn_layers),
            rewinder=rewinder,
            rewind_on=self.rewind.rewind_on,
        )
        session_ref.append(session)
        session.start()
        return session

    def _host_update_ratio(self, stats: AnyStats) -> UpdateRatio | None:
        """The host's meter: when asked for, or when the compiled step (traced by now) measured nothing."""
        if self._update_ratio is not None or self.update_ratio_every == 0:
            return self._update_ratio
        if self.update_ratio_every is None and stats.updates_in_graph:
            return None
        return UpdateRatio(stats.variables, self.update_ratio_every or UpdateRatio.FALLBACK_EVERY)

    def watch(self, model: Any, optimizer: Any) -> Watch:
        """Monitor a hand-written ``tf.GradientTape`` loop; see ``Watch``.

        The same ``Watch`` for the same model and optimizer: entering it again (once per
        epoch, say) continues the run, also inside a ``tf.function`` traced the first time.
        """
        from .watch import Watch

        key = (id(model), id(optimizer))
        watch = self._watches.get(key)
        if watch is None or watch.model is not model or watch.optimizer is not optimizer:
            watch = self._watches[key] = Watch(self, model, optimizer)
        return watch
