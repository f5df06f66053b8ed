"""Every alert kind's rule, in evaluation order: the one list the engine, the parameter API and the docs read.

Adding a kind: name it (and its label) in ``gradwatch.protocol.AlertKind`` / ``ALERT_LABELS``, write its rule
with its ``KindSpec`` in its own module of ``rules/`` and add the class here; docs/alerts.md gets its section
(tests/server/test_alert_kinds.py says what is missing).
"""

from __future__ import annotations

from gradwatch.protocol import ALERT_KINDS

from .rules import (
    ClipSaturated,
    DeadRelu,
    Diverging,
    ExplodingGradients,
    FrozenBatchnorm,
    Nonfinite,
    Rule,
    VanishingGradients,
)
from .spec import KindSpec

RULE_TYPES: dict[str, type[Rule]] = {
    r.spec.kind: r
    for r in (ExplodingGradients, VanishingGradients, Nonfinite, DeadRelu, FrozenBatchnorm, ClipSaturated, Diverging)
}
if tuple(RULE_TYPES) != ALERT_KINDS:  # the same kinds, in the protocol's (evaluation) order
    raise TypeError(
        f"the alert rules' kinds {tuple(RULE_TYPES)} differ from gradwatch.protocol.AlertKind {ALERT_KINDS}"
    )

SPECS: dict[str, KindSpec] = {kind: rule.spec for kind, rule in RULE_TYPES.items()}
