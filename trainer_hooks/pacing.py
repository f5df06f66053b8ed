"""Spacing host-side samples by their own measured cost.

Reading weights or moving statistics between steps stalls training for as long
as the read takes, so a sample is taken only when enough wall time has passed
for its cost to stay within a budget (a share of wall time), within optional
bounds in steps and seconds.
"""

from __future__ import annotations

import math


class Pacer:
    """``due(now)`` once per opportunity (a step); ``took(now, cost)`` after each sample."""

    def __init__(
        self, budget: float, *, min_calls: int = 1, max_calls: float = math.inf, max_interval: float = math.inf
    ) -> None:
        self.budget = budget
        self.min_calls = min_calls  # never more often than every this many calls...
        self.max_calls = max_calls  # ... nor less often (inf: no floor)
        self.max_interval = max_interval  # ... nor further apart than this (seconds)
        self.cost = 0.0  # the cheapest sample so far: its cost without interference (0: none yet)
        self.last = -math.inf  # when the last sample was taken
        self._calls: float = math.inf  # calls since the last sample: the first call is due

    @property
    def interval(self) -> float:
        """Seconds between samples that keeps them within the budget (and the ``max_interval`` floor)."""
        return min(self.max_interval, self.cost / self.budget)

    def due(self, now: float) -> bool:
        self._calls += 1
        if self._calls < self.min_calls:
            return False
        return self._calls >= self.max_calls or now - self.last >= self.interval

    def took(self, now: float, cost: float) -> None:
        self.last, self._calls = now, 0
        self.cost = cost if self.cost == 0.0 else min(self.cost, cost)
