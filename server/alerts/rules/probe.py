"""What the layer rules share (dead ReLU units, frozen BatchNormalization): probe values and per-layer counts.

Both raise one alert per affected layer, so a hit's ``key`` is its layer.
"""

from __future__ import annotations

from collections.abc import Mapping

from gradwatch.protocol import decode_float


def layer_of(variable: str) -> str:
    return variable.rsplit("/", 1)[0]


def probe_values(values: Mapping[str, float | str]) -> dict[str, float]:
    return {k: decode_float(v) for k, v in values.items()}


class ProbeCounter:
    """Consecutive probes above a threshold, per layer."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}

    def update(self, values: dict[str, float], above: float) -> dict[str, int]:
        for layer, v in values.items():
            self.runs[layer] = self.runs.get(layer, 0) + 1 if v > above else 0
        return self.runs
