"""``MonitorCore``: one monitor's run, behind its two doors.

The Keras callback (``GradientMonitor``, monitor.py) and the loop hook (``Watch``,
watch.py) are thin doors: each notices where a fit or loop begins, steps and ends,
and tells the core. The core holds the configuration, the run's lifecycle
(lifecycle.py), and makes the hooks and the session both doors drive; neither door
reaches into the other.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from gradwatch.tokens import resolve_token

from .config import MonitorConfig
from .graph_stats import GradientStats, Layout
from .lifecycle import RunLifecycle
from .model_facts import model_facts
from .multi_optimizer import AnyHook, AnyStats, GroupedStats, MultiHook, group_meta, group_stats
from .multi_worker import worker_count
from .optimizer_hook import OptimizerHook, learning_rate_variable, optimizer_clipping
from .origin import OriginFinder
from .probe import Prober
from .session import RunSession
from .snapshots import state_variables
from .tuner_trial import TrialInfo
from .update_ratio import UpdateRatio

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


class MonitorCore:
    """Constructed with a config (nothing starts); the doors call ``new_hook`` and ``begin``.

    The lifecycle opens the session (``open_session``) on the first step whose statistics exist.
    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        #: The statistics of the run's session, once it opened.
        self.stats: AnyStats | None = None
        #: The one run of this monitor, across every fit() and watch() block (lifecycle.py).
        self.lifecycle = RunLifecycle(self.open_session, config.flush_timeout)
        #: The clip setting in effect: the config's, or the optimizer's own when the config sets none.
        self.clip: tuple[str, float | None] = (config.clip_mode, config.clip_threshold)
        #: Told by the Keras door before the first step: the Keras Tuner trial its fit belongs to, and
        #: the host's update-ratio meter it started when the weights were there before the first step.
        self.trial: TrialInfo | None = None
        self.update_ratio: UpdateRatio | None = None

    def begin(self, hook: AnyHook, model: Any, optimizer: Any, on_leave: Callable[[], None]) -> int:
        """A fit or loop of ``model`` starts (``on_leave`` undoes what its door installed): the step it
        starts at, which continues the run's numbering, also past fits without the monitor."""
        # A recompile's new optimizer counts from 0: the run's numbering goes on all the same.
        next_step = max(int(optimizer.iterations.numpy()), self.lifecycle.next_step_for(model))
        if hook.stats is not None:
            next_step = max(next_step, int(hook.stats.step.numpy()))
            hook.stats.step.assign(next_step)
        self.lifecycle.begin(hook, model, optimizer, next_step, on_leave=on_leave)
        return next_step

    def run_name(self, model: Any) -> str:
        name = self.config.run_name or default_run_name(model)
        return name if self.trial is None else f"{name} · trial {self.trial.trial_id}"[:200]

    def new_hook(self, model: Any, optimizer: Any, ring: int = STATS_RING) -> OptimizerHook:
        """An (uninstalled) hook whose statistics cover ``model`` and clip as configured."""
        config = self.config
        mode, threshold = config.clip_mode, config.clip_threshold
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
        self.clip = (mode, threshold)

        def make_stats(variables: list[Any]) -> GradientStats:
            # Runs while the first step is traced: the model is built by then.
            first_step = max(int(optimizer.iterations.numpy()), self.lifecycle.next_step_for(model))
            rows = ring_rows(ring, len(variables), hook.traced_in_xla)
            return GradientStats(
                variables,
                find_batchnorm_layers(model),
                mode,
                threshold,
                rows,
                first_step,
                update_ratio=config.update_ratio_every is None,
            )

        # Without probe_data the probe replays the training batch of the steps it is due.
        sample_every = config.probe_every if config.probe_data is None else 0
        hook = OptimizerHook(
            optimizer,
            make_stats,
            config.every,
            guard_nonfinite=config.guard_nonfinite,
            make_origin=lambda: OriginFinder(model, sample_every=sample_every),
            strategy=getattr(model, "distribute_strategy", None),
        )
        return hook

    def new_group_hook(self, model: Any, optimizers: dict[str, Any], ring: int) -> MultiHook:
        """An (uninstalled) hook over every optimizer of ``model``, one group each.

        The run has one clip setting for every group: ``clip_threshold``, else the first
        group optimizer's own clipping.
        """
        config = self.config
        adopted = next((c for o in optimizers.values() if (c := optimizer_clipping(o)) is not None), None)
        mode, threshold = config.clip_mode, config.clip_threshold
        if threshold is None and adopted is not None:
            mode, threshold = adopted
        self.clip = (mode, threshold)

        def make_stats(variables: list[Any], step: tf.Variable) -> GradientStats:
            return GradientStats(
                variables, (), mode, threshold, ring, step=step, update_ratio=config.update_ratio_every is None
            )

        return MultiHook(
            model.optimizer,
            optimizers,
            make_stats,
            bn_layers=find_batchnorm_layers(model),
            guard_nonfinite=config.guard_nonfinite,
            strategy=getattr(model, "distribute_strategy", None),
        )

    def open_session(self, model: Any, optimizer: Any, hook: AnyHook) -> RunSession:
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
            prober = Prober(model, self.config.probe_data, stats.bn_layers, samples)
            notes.update(prober.notes)
            prober = prober if prober.active else None
        except Exception as err:
            notes["probe"] = f"the activation probe is off ({type(err).__name__}: {err})"

        optimizers = hook.optimizers if isinstance(hook, MultiHook) else {"optimizer": optimizer}
        groups = stats.group_variables if isinstance(stats, GroupedStats) else None

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

        def lr_variables() -> list[Any]:
            now = optimizers if groups is not None else {"optimizer": self.lifecycle.optimizer or optimizer}
            return [learning_rate_variable(o) for o in now.values()]

        session_ref: list[RunSession] = []  # the rewinder sets a threshold through the session made below
        rewinder, rewind_notes = self.config.rewind.rewinder(
            state_variables(model, optimizers.values()),
            lr_variables,
            lambda mode, threshold, group: session_ref[0].set_clip(mode, threshold, group),
        )
        notes.update(rewind_notes)

        session = RunSession(
            self.config,
            stats=stats,
            run_name=self.run_name(model),
            token=resolve_token(self.config.token),
            clip=self.clip,
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
                **(self.trial.meta if self.trial is not None else {}),
                **notes,
            },
            set_lr=set_lr,
            prober=prober,
            origin=hook.origin,
            update_ratio=self._host_update_ratio(stats),
            facts=lambda: model_facts(model, stats.bn_layers),
            rewinder=rewinder,
        )
        session_ref.append(session)
        session.start()
        return session

    def _host_update_ratio(self, stats: AnyStats) -> UpdateRatio | None:
        """The host's meter: when asked for, or when the compiled step (traced by now) measured nothing."""
        every = self.config.update_ratio_every
        if self.update_ratio is not None or every == 0:
            return self.update_ratio
        if every is None and stats.updates_in_graph:
            return None
        return UpdateRatio(stats.variables, every or UpdateRatio.FALLBACK_EVERY)
