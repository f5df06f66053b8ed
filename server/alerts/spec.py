"""What declares an alert kind: its severity, clear steps, tunable numbers, message and remedies.

Each rule class carries one ``KindSpec`` (``Rule.spec``), beside the code that detects it; the
engine, the parameter API (``params.py``), the texts and docs/alerts.md's tables derive from it.
The kind's name and the words the page shows for it are the protocol's (``gradwatch.protocol.AlertKind``,
``ALERT_LABELS``); ``kinds.py`` checks that the rules cover exactly those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradwatch.protocol import ALERT_KINDS, SEVERITIES

#: What a rule found: numbers, strings or ``None``.
Evidence = dict[str, float | int | str | None]


@dataclass(frozen=True)
class Param:
    default: float
    low: float
    high: float
    integer: bool
    doc: str


def whole(default: int, low: int, high: int, doc: str) -> Param:
    """An integer parameter."""
    return Param(float(default), float(low), float(high), True, doc)


def real(default: float, low: float, high: float, doc: str) -> Param:
    """A real-valued parameter."""
    return Param(default, low, high, False, doc)


def _as_declared(remedies: tuple[str, ...], evidence: Mapping[str, Any]) -> list[str]:
    return list(remedies)


@dataclass(frozen=True)
class KindSpec:
    kind: str
    severity: str
    #: An open alert of this kind resolves once its condition has been clear for this many steps
    #: (docs/alerts.md, "Lifecycle").
    clear_steps: int
    params: Mapping[str, Param]
    remedies: tuple[str, ...]
    #: ``(step, layer, evidence) -> message``: what the alert says.
    message: Callable[[int, str | None, Mapping[str, Any]], str]
    #: ``(remedies, evidence) -> remedies``: the remedies ordered (or replaced) by what the evidence says.
    advise: Callable[[tuple[str, ...], Mapping[str, Any]], list[str]] = _as_declared

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise TypeError(f"alert kind {self.kind!r} is not in gradwatch.protocol.AlertKind {ALERT_KINDS}")
        if self.severity not in SEVERITIES:
            raise TypeError(f"{self.kind}: severity {self.severity!r} is not one of {SEVERITIES}")
        if not self.clear_steps > 0:
            raise TypeError(f"{self.kind}: clear_steps must be > 0 (got {self.clear_steps!r})")
        for name, p in self.params.items():
            if not p.low <= p.default <= p.high:
                raise TypeError(f"{self.kind}.{name}: default {p.default:g} is outside {p.low:g} .. {p.high:g}")

    def remedies_for(self, evidence: Mapping[str, Any]) -> list[str]:
        return self.advise(self.remedies, evidence)


@dataclass
class RuleSettings:
    muted: bool = False
    params: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        return self.params[name]

    def view(self) -> dict[str, Any]:
        return {"muted": self.muted, "params": {k: _number(k, v, self.kind_params) for k, v in self.params.items()}}

    kind_params: Mapping[str, Param] = field(default_factory=dict, repr=False)


def _number(name: str, value: float, spec: Mapping[str, Param]) -> float | int:
    return int(value) if name in spec and spec[name].integer else value
