"""Rewind: put a run back to a kept snapshot and go on, from the page or unattended (issue 19).

Runs on the training thread between two steps (``RunControl`` applies commands there), so the restore
never races the compiled step. The learning rate after a rewind is the one training had just before it
(a ``set_lr`` since the snapshot stays in force), times ``lr_factor`` for an unattended rewind, or the
command's own ``lr``. The input pipeline is not rewound: ``fit``'s iterator goes on with the next batch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradwatch.protocol import ALERT_KINDS, Command

from .control import PauseInstead
from .snapshots import DEFAULT_EVERY, DEFAULT_KEEP, DEFAULT_MB, Snapshots, SnapshotTooLarge

#: The run's info line (``meta["rewind"]``) saying what a rewind does not restore.
DATA_NOTE = (
    "a rewind restores the weights and the optimizer state; the input pipeline goes on with the next batch "
    "(the batches between the snapshot and the rewind are neither replayed nor skipped)"
)


class Rewinder:
    """Takes the snapshots of a run and applies its ``rewind`` commands.

    ``lr_variables()`` gives the learning-rate variables of the optimizers training now (``None`` for a
    schedule); ``set_clip(mode, threshold)`` applies a threshold given with the rewind.
    """

    def __init__(
        self,
        snapshots: Snapshots,
        lr_variables: Callable[[], list[Any]],
        set_clip: Callable[[str | None, float, str | None], None],
        lr_factor: float,
        max_rewinds: int,
    ) -> None:
        self.snapshots = snapshots
        self._lr_variables = lr_variables
        self._set_clip = set_clip
        self.lr_factor = lr_factor
        self.max_rewinds = max_rewinds
        self.auto_rewinds = 0

    def after_step(self, last: int, healthy: Callable[[], bool]) -> bool:
        """Take a snapshot after step ``last`` if one is due and the step was healthy; True if one was taken."""
        if not self.snapshots.due(last):
            return False
        if not healthy():
            return False  # tried again after the next step
        return self.snapshots.take(last)

    def apply(self, command: Command) -> str:
        """Restore the snapshot ``command`` names and set what comes with it; the ack's detail."""
        assert command.step is not None  # guaranteed by Command's validation
        snapshot = self.snapshots.newest_at_or_before(command.step)
        if snapshot is None:
            held = self.snapshots.steps
            raise ValueError(f"no snapshot at or before step {command.step}; the run holds {held or 'none yet'}")
        if command.auto and self.auto_rewinds >= self.max_rewinds:
            raise PauseInstead(f"max_rewinds={self.max_rewinds} unattended rewinds done; pausing instead")
        variables = self._lr_variables()
        scale = self.lr_factor if command.auto and command.lr is None else 1.0
        if (command.lr is not None or scale != 1.0) and any(v is None for v in variables):
            raise ValueError(
                "the learning rate is a schedule here: a rewind cannot set or scale it; rewind without "
                "'lr' (and rewind_lr_factor=1 for rewind_on)"
            )
        lrs = [None if v is None else float(v.numpy()) * scale for v in variables]
        if command.threshold is not None:
            self._set_clip(command.mode, float(command.threshold), None)  # validates before anything changes
        self.snapshots.restore(snapshot)
        for variable, lr in zip(variables, lrs, strict=True):
            if variable is not None:
                variable.assign(float(command.lr) if command.lr is not None else lr)
        self.auto_rewinds += bool(command.auto)
        now = [lr for lr in lrs if lr is not None]
        shown = float(command.lr) if command.lr is not None else (now[0] if now else None)
        return f"rewound to the snapshot of step {snapshot.step}" + (f", lr {shown:.6g}" if shown is not None else "")


@dataclass(frozen=True)
class RewindOptions:
    """``GradientMonitor``'s snapshot and rewind options, validated together (see its docstring)."""

    rewind_on: tuple[str, ...] = ()
    rewind_lr_factor: float = 0.5
    max_rewinds: int = 3
    snapshot_every: int = DEFAULT_EVERY
    snapshot_keep: int = DEFAULT_KEEP
    snapshot_mb: float = DEFAULT_MB

    def __post_init__(self) -> None:
        on = self.rewind_on
        unknown = [on] if isinstance(on, str) else [k for k in on if k not in ALERT_KINDS]
        if unknown:
            raise ValueError(f"rewind_on={on!r}: {unknown} not alert kinds; choose from {ALERT_KINDS} (a tuple)")
        factor = self.rewind_lr_factor
        if isinstance(factor, bool) or not (isinstance(factor, (int, float)) and 0 < factor <= 1):
            raise ValueError(f"rewind_lr_factor={factor!r} must be a number in (0, 1], e.g. 0.5 (1: keep the lr)")
        for name, low in (("max_rewinds", 0), ("snapshot_every", 0), ("snapshot_keep", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be a whole number >= {low}")
        mb = self.snapshot_mb
        if isinstance(mb, bool) or not (isinstance(mb, (int, float)) and math.isfinite(mb) and mb > 0):
            raise ValueError(f"snapshot_mb={mb!r} must be a positive number of MiB, e.g. 512")
        if on and self.snapshot_every == 0:
            raise ValueError(f"rewind_on={on!r} needs snapshots: snapshot_every must be >= 1 (0 turns them off)")
        object.__setattr__(self, "rewind_on", tuple(on))

    def rewinder(
        self,
        variables: list[Any],
        lr_variables: Callable[[], list[Any]],
        set_clip: Callable[[str | None, float, str | None], None],
    ) -> tuple[Rewinder | None, dict[str, str]]:
        """The run's rewinder (``None``: snapshots off or too large) and its lines for the run's info."""
        if self.snapshot_every == 0:
            return None, {}
        try:
            snapshots = Snapshots(variables, self.snapshot_every, self.snapshot_keep, int(self.snapshot_mb * 2**20))
        except SnapshotTooLarge as err:
            if self.rewind_on:  # asked for: say it loudly; otherwise the run's info is enough
                warnings.warn(f"gradwatch: {err}", RuntimeWarning, stacklevel=4)
            return None, {"rewind": str(err)}
        rewinder = Rewinder(snapshots, lr_variables, set_clip, self.rewind_lr_factor, self.max_rewinds)
        return rewinder, {
            "rewind": f"snapshots every {self.snapshot_every} steps, {snapshots.keep} kept "
            f"({snapshots.size / 2**20:.1f} MiB each); {DATA_NOTE}"
        }
