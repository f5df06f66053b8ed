"""Keras Tuner: which trial a ``fit()`` belongs to, so that each trial is a run named after it.

Keras Tuner deep-copies the search's callbacks for every trial (``GradientMonitor.__deepcopy__``
makes that copy a fresh monitor, so a run of its own) and adds its own ``TunerCallback``, which
holds the ``Trial``. Found by duck typing (an object with ``trial_id`` and
``hyperparameters.values``), so gradwatch never imports keras_tuner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_SCALAR = (str, int, float, bool)


@dataclass(frozen=True)
class TrialInfo:
    trial_id: str
    #: The trial's hyperparameters as run info, ``hp.<name>`` (scalars only; others as their repr).
    meta: dict[str, str | int | float | bool | None]


def find_trial(callbacks: Iterable[Any]) -> TrialInfo | None:
    for callback in callbacks:
        trial = getattr(callback, "trial", None)
        values = getattr(getattr(trial, "hyperparameters", None), "values", None)
        trial_id = getattr(trial, "trial_id", None)
        if trial_id is not None and isinstance(values, dict):
            meta = {f"hp.{k}": v if v is None or isinstance(v, _SCALAR) else repr(v) for k, v in values.items()}
            return TrialInfo(str(trial_id), {"tuner_trial": str(trial_id), **meta})
    return None
