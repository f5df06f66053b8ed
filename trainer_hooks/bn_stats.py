"""BatchNormalization moving statistics, sampled on the host.

Moving statistics drift slowly, so they are read between steps, not computed in
the compiled step (where a summary of every layer cost ~3 % of a small MLP's
step). A sample reads each layer's ``moving_mean`` and ``moving_variance`` once
and summarises them per layer: mean / min / max, and the RMS change since the
previous sample. A sample is taken on the first reportable step of every block of
``EVERY`` reportable steps: spaced by steps, never by wall time, so that which
steps are sampled (and what the rules conclude from them) is the same however
loaded the machine is. Its cost, one read of every moving statistic (one compiled
read past ``FlatReader.FEW`` variables), is spread over those steps; bench.step_cost
measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .readback import FlatReader


class BatchNormSampler:
    """``sample()`` → ``[n_layers][8]`` in ``protocol.BN_FIELDS`` order; ``due(index)`` spaces it."""

    #: One sample per this many reportable steps (the frozen-BatchNorm rule counts samples).
    EVERY = 5

    def __init__(self, layers: Sequence[Any], every: int = EVERY) -> None:
        self.layers = list(layers)
        self.every = every
        self._block = -1  # the last block of reportable steps sampled
        # moving_mean, moving_variance of each layer in turn, read in one go
        self.reader = FlatReader([v for layer in self.layers for v in (layer.moving_mean, layer.moving_variance)])
        self._prev = self._read()  # the first sample's change is measured from here

    def due(self, index: int) -> bool:
        """Is the reportable step number ``index`` (step // every) the first one seen in a new block?"""
        block = index // self.every
        if not self.layers or block <= self._block:
            return False
        self._block = block
        return True

    def sample(self) -> list[list[float]]:
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
        return rows

    def _read(self) -> np.ndarray:
        return self.reader.read().astype(np.float64)
