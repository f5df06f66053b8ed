"""BatchNormalization moving statistics, sampled on the host.

Moving statistics drift slowly, so they are read between steps, not computed in
the compiled step (where a summary of every layer cost ~3 % of a small MLP's
step). A sample reads each layer's ``moving_mean`` and ``moving_variance`` once
and summarises them per layer: mean / min / max, and the RMS change since the
previous sample. Sampling is paced by its own measured cost so that it takes at
most ``budget`` of the wall time, yet at least once a second and every
``MAX_STEPS`` reportable steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .pacing import Pacer
from .readback import FlatReader


class BatchNormSampler:
    """``sample()`` → ``[n_layers][8]`` in ``protocol.BN_FIELDS`` order; ``due()`` paces it."""

    #: Never further apart than this (seconds), whatever the cost.
    MAX_INTERVAL = 1.0
    #: ... nor than this many calls to ``due`` (reportable steps): the frozen-BatchNorm rule counts samples.
    MAX_STEPS = 5

    def __init__(self, layers: Sequence[Any], budget: float = 0.005) -> None:
        self.layers = list(layers)
        self.pacer = Pacer(budget, max_calls=self.MAX_STEPS, max_interval=self.MAX_INTERVAL)
        # moving_mean, moving_variance of each layer in turn, read in one go
        self.reader = FlatReader([v for layer in self.layers for v in (layer.moving_mean, layer.moving_variance)])
        self._prev = self._read()  # the first sample's change is measured from here

    def due(self, now: float) -> bool:
        return bool(self.layers) and self.pacer.due(now)

    def sample(self) -> list[list[float]]:
        start = time.perf_counter()
        current = self._read()
        r, sizes = self.reader, np.maximum(self.reader.sizes, 1)
        columns = [
            r.per_variable(np.add, current) / sizes,
            r.per_variable(np.minimum, current),
            r.per_variable(np.maximum, current),
            np.sqrt(r.per_variable(np.add, np.square(current - self._prev)) / sizes),
        ]
        # [mean, min, max, change] of moving_mean, then of moving_variance, per layer
        rows = np.stack(columns, axis=1).reshape(len(self.layers), 8).tolist()
        self._prev = current
        self.pacer.took(time.monotonic(), time.perf_counter() - start)
        return rows

    def _read(self) -> np.ndarray:
        return self.reader.read().astype(np.float64)
