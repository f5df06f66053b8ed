"""A run's watched variables as of a step: the one place that decides it.

A run's ``variables`` only grow: a trainer's ``variables`` message (``protocol.VariableSet``) adds the
names it has not had and says which variables the step records follow from a step on (a fine-tuning
recipe: the base made trainable, the model recompiled). ``RunRow.variable_sets`` keeps those changes as
``[from_step, [indices into variables]]`` in step order; empty means every variable, throughout.

Everything that relates a record's per-variable vectors to the run's variables goes through
``variables_at``: the ingest check of vector lengths, the reads that widen stored rows to the run's
columns (``widen``), the alert rules' view of the variables, and the page's.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from .stepcodec import VECTOR_COLUMNS, StepColumns

if TYPE_CHECKING:
    from .store import RunRow

#: ``RunRow.variable_sets``: ``[from_step, [indices into the run's variables]]``, in step order.
Sets = list[list[Any]]


def variables_at(variables: list[str], variable_sets: Sets, step: int) -> list[int]:
    """Indices into ``variables`` of the variables that step ``step``'s vectors carry, in their order."""
    current: list[int] = list(range(len(variables)))
    for from_step, indices in variable_sets:
        if int(from_step) > step:
            break
        current = [int(i) for i in indices]
    return current


def watched_at(run: RunRow, step: int) -> list[int]:
    """``variables_at`` for ``run``: how many values, and of which variables, step ``step``'s vectors carry."""
    return variables_at(run.variables, run.variable_sets, step)


def latest(variables: list[str], variable_sets: Sets) -> list[int]:
    """The variables the newest records follow."""
    return variables_at(variables, variable_sets, 2**62)


def declare(variables: list[str], variable_sets: Sets, from_step: int, names: list[str]) -> tuple[list[str], Sets]:
    """``variables`` and ``variable_sets`` once ``names`` are the watched variables from ``from_step`` on.

    New names are appended; the set before the first change is written down first (all the
    variables there were), so that the steps before keep their meaning. Idempotent.
    """
    grown = list(variables) + [n for n in dict.fromkeys(names) if n not in set(variables)]
    index = {n: i for i, n in enumerate(grown)}
    sets = [list(s) for s in variable_sets] or [[0, list(range(len(variables)))]]
    sets = [s for s in sets if int(s[0]) != from_step]
    sets.append([from_step, [index[n] for n in names]])
    sets.sort(key=lambda s: int(s[0]))
    return grown, sets


def segments(steps: list[int], variables: list[str], variable_sets: Sets) -> list[tuple[int, int]]:
    """``[(start, end)]`` row ranges of ``steps`` (ascending) that follow one variable set each."""
    if not variable_sets or not steps:
        return [(0, len(steps))]
    bounds = [int(s[0]) for s in variable_sets]
    cuts = np.searchsorted(np.asarray(steps), bounds, side="left").tolist()
    edges = sorted({0, len(steps), *[c for c in cuts if 0 < c < len(steps)]})
    return list(itertools.pairwise(edges))


def widen(part: StepColumns, active: list[int], n_vars: int) -> StepColumns:
    """``part``'s vectors (one column per ``active`` variable) as the run's ``n_vars`` columns.

    Variables not watched on these steps are NaN (counts: 0) and marked in ``part.inactive``.
    """
    if active == list(range(n_vars)):
        return part
    n = len(part)
    for name in VECTOR_COLUMNS:
        values = part.vectors[name]
        if name == "bn":
            continue
        wide = (
            np.zeros((n, n_vars), values.dtype)
            if values.dtype.kind in "iu"
            else np.full((n, n_vars), np.nan, values.dtype)
        )
        if active:
            wide[:, active] = values
        part.vectors[name] = wide
    inactive = np.ones((n, n_vars), dtype=bool)
    inactive[:, active] = False
    part.inactive = inactive
    return part
