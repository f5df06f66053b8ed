"""Snapshots in memory: the last few healthy states of a run, to rewind to (issue 19).

A snapshot is a host copy of every model variable (weights, BatchNorm moving statistics, seed generator
states) and every watched optimizer's variables (iteration count, learning rate, slots; a
``LossScaleOptimizer``'s ``dynamic_scale`` and ``step_counter``). It is taken on the host between two
steps (the batch-end hook), so the compiled step is untouched, and only after a step whose gradients,
loss and weights were all finite.

Its ``step`` is the monitor's step after which it was taken: restoring it puts the run back in the
state it had before step ``step + 1``. The monitor's numbering goes on after a rewind; the optimizer's
``iterations`` (and so a learning-rate schedule) go back with the snapshot.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Snapshot every this many steps by default: far enough apart that copying the weights costs well under
#: 1% of training (docs/performance.md, "Snapshots"), close enough that a rewind loses at most that many steps.
DEFAULT_EVERY = 100
#: Snapshots kept by default: the newest may postdate an alert's onset (the alert arrives a few steps after
#: it), the one before is older than the onset, one more covers a slow-building blow-up.
DEFAULT_KEEP = 3
#: Host memory the snapshots may hold together by default, MiB.
DEFAULT_MB = 512.0


class SnapshotTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class Snapshot:
    step: int
    arrays: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


def _unique(variables: Iterable[Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def state_variables(model: Any, optimizers: Iterable[Any]) -> list[Any]:
    """Everything a rewind restores: the model's variables, then each optimizer's, each variable once."""
    return _unique([*model.variables, *(v for opt in optimizers for v in opt.variables)])


class Snapshots:
    """The newest ``keep`` healthy snapshots of ``variables``, within ``budget_bytes`` together."""

    def __init__(self, variables: list[Any], every: int, keep: int, budget_bytes: int) -> None:
        self.variables = variables
        self.every = every
        self.budget_bytes = budget_bytes
        self.size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
        if self.size > budget_bytes:
            raise SnapshotTooLarge(
                f"one snapshot of this model and its optimizer takes {self.size / 2**20:.1f} MiB, more than "
                f"snapshot_mb={budget_bytes / 2**20:g}; raise snapshot_mb to at least {self.size / 2**20:.0f} "
                "(rewind is off for this run)"
            )
        self.keep = max(1, min(keep, budget_bytes // max(self.size, 1)))
        self._held: collections.deque[Snapshot] = collections.deque(maxlen=self.keep)
        self._last_block = -1

    @property
    def steps(self) -> list[int]:
        """The steps of the snapshots held, oldest first."""
        return [s.step for s in self._held]

    def due(self, last: int) -> bool:
        """Is a snapshot due after step ``last``? (Once per ``every`` steps, also when fit skips step numbers.)"""
        return last // self.every > self._last_block

    def take(self, last: int) -> bool:
        """Copy the state after step ``last``; False (nothing kept until the next one is due) if any floating
        value is not finite."""
        self._last_block = last // self.every
        arrays = tuple(np.array(v.numpy(), copy=True) for v in self.variables)
        if not all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f"):
            return False
        if self._held and self._held[-1].step >= last:  # the numbering went on past a rewind; never back
            return False
        self._held.append(Snapshot(last, arrays))
        return True

    def newest_at_or_before(self, step: int) -> Snapshot | None:
        """The newest snapshot whose ``step`` is at most ``step`` (the server asks for the one before an
        alert's onset step ``k`` with ``k - 1``)."""
        return next((s for s in reversed(self._held) if s.step <= step), None)

    def restore(self, snapshot: Snapshot) -> None:
        """Assign the snapshot's values back (training thread, between steps); newer snapshots are dropped,
        since they belong to the stretch of training being discarded."""
        for variable, array in zip(self.variables, snapshot.arrays, strict=True):
            variable.assign(array)
        while self._held and self._held[-1].step > snapshot.step:
            self._held.pop()
