"""Every optimizer a model carries, watched as one run: a GAN's discriminator and generator.

A ``train_step`` that updates with optimizers of its own (keras-io's DCGAN and
WGAN-GP, ``compile(d_optimizer=..., g_optimizer=...)``) never calls the compiled
``model.optimizer``. ``find_optimizers`` lists every Keras optimizer held in one
of the model's attributes; each gets its own ``OptimizerHook`` (its own
``GradientStats`` ring and clipping variables), and all of them share one step
counter that the train step advances once (``MultiHook.end_step``), so a step
that updates twice, or the discriminator three times (WGAN-GP), is one step.
When an optimizer updates more than once in a step, its last update is the one
recorded. ``GroupedStats`` merges the rings on the host into the rows a single
``GradientStats`` would give, the groups' variables side by side.

A model with only ``model.optimizer`` takes none of this (monitor.py): its step is
exactly what it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .bn_stats import BatchNormSampler
from .graph_stats import SCALARS, GradientStats, Layout, monitor_variable
from .optimizer_hook import OptimizerHook

_S = len(SCALARS)
_COL = {name: i for i, name in enumerate(SCALARS)}


def group_name(attribute: str) -> str:
    """``d_optimizer`` -> ``d``, ``generator_optimizer`` -> ``generator``, ``optimizer`` -> ``optimizer``."""
    return attribute.removesuffix("optimizer").strip("_") or attribute


def find_optimizers(model: Any) -> dict[str, Any]:
    """Every Keras optimizer in ``model``'s attributes, by group name, in attribute order.

    A ``LossScaleOptimizer``'s inner optimizer is updated through it: it is not a group of its own.
    """
    found: dict[str, Any] = {}
    for attribute, value in vars(model).items():
        if isinstance(value, keras.optimizers.Optimizer) and all(value is not o for o in found.values()):
            found[group_name(attribute)] = value
    inner = {id(getattr(o, "inner_optimizer", None)) for o in found.values()}
    return {name: o for name, o in found.items() if id(o) not in inner}


def variable_name(variable: Any) -> str:
    return str(getattr(variable, "path", None) or variable.name)


def group_meta(stats: GroupedStats) -> str:
    """The hello's ``meta["optimizer_groups"]``: JSON ``{group: number of variables}``, in variable order.

    A group's variables are contiguous in the hello's ``variables`` (docs/protocol.md).
    """
    return json.dumps({name: len(names) for name, names in stats.group_variables.items()})


def group_stats(stats: AnyStats, group: str) -> GradientStats:
    """The statistics of optimizer ``group`` (a command's ``group``); a clear ValueError if there is none."""
    groups = stats.groups if isinstance(stats, GroupedStats) else {}
    if group not in groups:
        have = f"its groups are {sorted(groups)}" if groups else "it has one optimizer: leave 'group' out"
        raise ValueError(f"group={group!r} is not an optimizer group of this run; {have}")
    return groups[group]


class GroupedStats:
    """The statistics of several groups, read as one ``GradientStats`` (the parts ``RunSession`` uses)."""

    def __init__(self, groups: dict[str, GradientStats], step: tf.Variable, bn_layers: Sequence[Any]) -> None:
        self.groups = groups
        self.step = step
        self.variables = [v for stats in groups.values() for v in stats.variables]
        #: Variable names per group, for the hello: the page groups its rows by it.
        self.group_variables = {name: [variable_name(v) for v in s.variables] for name, s in groups.items()}
        self.bn_layers = list(bn_layers)
        self.bn = BatchNormSampler(self.bn_layers)
        self.layout = Layout(len(self.variables))
        self.ring = next(iter(groups.values())).ring

    @property
    def loss_recorded(self) -> bool:
        return any(s.loss_recorded for s in self.groups.values())

    @property
    def updates_in_graph(self) -> bool:
        return any(s.updates_in_graph for s in self.groups.values())

    @property
    def traces(self) -> int:
        return sum(s.traces for s in self.groups.values())

    def set_clip(self, mode: str, threshold: float | None) -> None:
        for stats in self.groups.values():
            stats.set_clip(mode, threshold)

    def count_weight_nonfinite(self) -> int:
        return sum(s.count_weight_nonfinite() for s in self.groups.values())

    def read(self) -> np.ndarray:
        """Every group's ring, merged row by row (the rows of one step sit at the same index)."""
        parts = [(s.layout.n_vars, s.read()) for s in self.groups.values()]
        out = np.empty((self.ring, self.layout.width))
        for r in range(self.ring):
            out[r] = self._merge(r, parts)
        return out

    def _merge(self, r: int, parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
        step = max(rows[r, 0] for _, rows in parts)
        # A group that did not update in this step (its row is older) shows zero norms and no ratio.
        fresh = [(n, rows[r]) for n, rows in parts if rows[r, 0] == step]
        first = fresh[0][1]
        head = first[:_S].copy()
        for col in ("unhealthy", "skipped", "origin_features", "origin_labels", "clipped_fraction"):
            head[_COL[col]] = max(row[_COL[col]] for _, row in fresh)
        head[_COL["clip_scale"]] = min(row[_COL["clip_scale"]] for _, row in fresh)
        head[_COL["loss"]] = next((row[_COL["loss"]] for _, row in fresh if np.isfinite(row[_COL["loss"]])), np.nan)
        blocks: list[list[np.ndarray]] = [[], [], [], []]  # sq norms, NaN, Inf counts, update ratios
        for n, rows in parts:
            row = rows[r]
            for b in range(4):
                if row[0] == step:
                    blocks[b].append(row[_S + b * n : _S + (b + 1) * n])
                else:
                    blocks[b].append(np.full(n, np.nan if b == 3 else 0.0))
        return np.concatenate([head, *(np.concatenate(b) for b in blocks)])


class MultiHook:
    """One ``OptimizerHook`` per group; installs, counts steps and reads them as one.

    ``make_stats(variables, step)`` builds a group's ``GradientStats`` on the shared ``step``.
    """

    def __init__(
        self,
        optimizer: Any,
        optimizers: dict[str, Any],
        make_stats: Callable[[list[Any], tf.Variable], GradientStats],
        *,
        bn_layers: Sequence[Any] = (),
        guard_nonfinite: bool = False,
        strategy: Any = None,
    ) -> None:
        self.optimizer = optimizer  # the compiled one: a new hook when it changes (monitor.py)
        self.optimizers = optimizers
        self.strategy = strategy
        self.origin = None  # a subclassed GAN cannot be replayed layer by layer
        self.bn_layers = list(bn_layers)
        self._make_stats = make_stats
        self._step: tf.Variable | None = None
        self._stats: GroupedStats | None = None
        self.hooks = {
            name: OptimizerHook(o, self._stats_for, guard_nonfinite=guard_nonfinite, strategy=strategy)
            for name, o in optimizers.items()
        }

    def _stats_for(self, variables: list[Any]) -> GradientStats:
        # Called eagerly (under tf.init_scope) while the first step is traced.
        if self._step is None:
            self._step = monitor_variable(int(self.optimizer.iterations.numpy()), tf.int64, "gw_step")
        return self._make_stats(variables, self._step)

    @property
    def stats(self) -> GroupedStats | None:
        """The groups that updated in the traced step, merged; None before the first trace."""
        if self._stats is None and self._step is not None:
            groups = {name: h.stats for name, h in self.hooks.items() if h.stats is not None}
            if groups:
                self._stats = GroupedStats(groups, self._step, self.bn_layers)
        return self._stats

    def install(self) -> None:
        for hook in self.hooks.values():
            hook.install()

    def uninstall(self) -> None:
        for hook in self.hooks.values():
            hook.uninstall()

    def note_inputs(self, inputs: Any) -> None:
        for hook in self.hooks.values():
            hook.note_inputs(inputs)

    def end_step(self) -> None:
        """After the train step (traced): the step is done, whichever optimizers updated in it."""
        if self._step is not None:
            self._step.assign_add(1)


#: What the lifecycle and the fit swap drive: one optimizer's hook, or every optimizer's.
AnyHook = OptimizerHook | MultiHook
AnyStats = GradientStats | GroupedStats
