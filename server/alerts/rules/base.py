"""What every alert rule shares: the run it watches, the hits it reports, the ``Rule`` base, kernel lookup.

Each rule keeps its own rolling state for one run and turns a ``StepBatch`` into
``Hit``s: the (kind, layer) conditions that hold somewhere in the batch, with
the first and last step they held at. The engine decides whether a hit is a new
alert, a re-trigger or the continuation of one already raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from gradwatch.protocol import Probe

from ..series import IntArray, StepBatch
from ..spec import Evidence, KindSpec, RuleSettings


@dataclass(frozen=True)
class RunInfo:
    variables: list[str]
    bn_layers: list[str]
    relu_layers: list[str] = field(default_factory=list)
    guard_nonfinite: bool = False
    activations: dict[str, str] = field(default_factory=dict)  # TrainerHello.activations
    bn_inference: list[str] = field(default_factory=list)  # TrainerHello.bn_inference

    def activation(self, layer: str) -> str | None:
        """The activation of ``layer`` (a variable's layer path) or of the nearest layer that contains it."""
        path = layer
        while path:
            if path in self.activations:
                return self.activations[path]
            path = path.rpartition("/")[0]
        return self.activations.get(layer.rpartition("/")[2])


@dataclass
class Hit:
    kind: str
    step: int
    last_step: int
    layer: str | None
    layers: list[str]
    evidence: Evidence
    #: Episode identity: a hit with the same key as the previous batch continues that episode.
    key: str | None = None
    #: Overrides the kind's severity (e.g. "info" for an overflow the loss scaler handled).
    severity: str | None = None


class Rule:
    #: The kind this rule raises, declared once beside it: severity, clear steps, parameters, message, remedies.
    spec: ClassVar[KindSpec]
    kind: ClassVar[str]  # spec.kind
    clear_steps: ClassVar[int]  # spec.clear_steps

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.kind, cls.clear_steps = cls.spec.kind, cls.spec.clear_steps

    def __init__(self, run: RunInfo, settings: RuleSettings) -> None:
        self.run = run
        self.p = settings.params

    def observe(self, batch: StepBatch) -> list[Hit]:
        return []

    def checked_steps(self, batch: StepBatch) -> IntArray:
        """The steps of ``batch`` on which ``observe`` checked its condition (a step without a hit is clear)."""
        return batch.step

    def observe_probe(self, probe: Probe) -> list[Hit]:
        return []


KERNEL_SUFFIXES = ("kernel", "weight", "weights", "embeddings", "depthwise_kernel")


def kernel_indices(variables: list[str]) -> list[int]:
    """Indices of weight matrices (by name), in model order; all variables if none match."""
    idx = [i for i, v in enumerate(variables) if v.rsplit("/", 1)[-1].endswith(KERNEL_SUFFIXES)]
    return idx or list(range(len(variables)))
