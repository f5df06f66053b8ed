"""Per-run alert bookkeeping: runs the rules on every batch and probe, one open alert per (kind, layer).

``RunAlerts`` is synchronous and does no I/O. It returns ``Change``s that must be
saved and pushed now (an alert raised for the first time, re-triggered after
its condition had cleared, or given its non-finite origin), and collects
continuations (the same episode still going: ``last_step`` and evidence move
on) in ``dirty`` for the caller to save at its own pace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gradwatch.protocol import NonfiniteOrigin, Probe, StepRecord

from .divergence import Diverging
from .params import RuleSettings, settings
from .probe_rules import DeadRelu, FrozenBatchnorm
from .rules import ClipSaturated, Evidence, ExplodingGradients, Hit, Nonfinite, Rule, RunInfo, VanishingGradients
from .series import StepBatch
from .texts import SEVERITY, SEVERITY_RANK, message, remedies

#: Evaluation order: exploding before nonfinite, so growth that ends in NaN is raised first.
RULE_TYPES: dict[str, type[Rule]] = {
    "exploding_gradients": ExplodingGradients,
    "vanishing_gradients": VanishingGradients,
    "nonfinite": Nonfinite,
    "dead_relu": DeadRelu,
    "frozen_batchnorm": FrozenBatchnorm,
    "clip_saturated": ClipSaturated,
    "diverging": Diverging,
}


@dataclass(eq=False)
class Alert:
    run_id: int
    kind: str
    severity: str
    step: int
    last_step: int
    layer: str | None
    layers: list[str]
    evidence: Evidence
    message: str
    remedies: list[str]
    count: int = 1
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    id: int = 0  # assigned when first stored

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "kind": self.kind, "severity": self.severity,
                "step": self.step, "last_step": self.last_step, "layer": self.layer, "layers": list(self.layers),
                "evidence": dict(self.evidence), "message": self.message, "remedies": list(self.remedies),
                "count": self.count, "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass
class Change:
    alert: Alert
    created: bool
    #: An open alert's severity rose (an info overflow that persisted): it is raised anew.
    escalated: bool = False

    @property
    def raised(self) -> bool:
        """Newly raised at warning or critical: what ``pause_on`` acts on (information never pauses)."""
        return (self.created or self.escalated) and self.alert.severity != "info"


class RunAlerts:
    def __init__(self, run_id: int, info: RunInfo, rules: dict[str, RuleSettings] | None = None,
                 existing: list[Alert] | None = None) -> None:
        self.run_id = run_id
        self.info = info
        self.settings = {k: (rules or {}).get(k) or settings(k) for k in RULE_TYPES}
        self.rules: dict[str, Rule] = {}
        for kind in RULE_TYPES:
            self._build(kind)
        self.open: dict[tuple[str, str | None], Alert] = {(a.kind, a.layer): a for a in existing or []}
        #: Episodes that held in the previous evaluation: (kind, source, key) -> alert.
        self.active: dict[tuple[str, str, str | None], Alert] = {}
        self.dirty: set[Alert] = set()
        self.pending_origin: NonfiniteOrigin | None = None

    def _build(self, kind: str) -> None:
        s = self.settings[kind]
        if s.muted:
            self.rules.pop(kind, None)
        else:
            self.rules[kind] = RULE_TYPES[kind](self.info, s)

    def configure(self, kind: str, new: RuleSettings) -> None:
        """New settings for one rule: its rolling state starts over."""
        self.settings[kind] = new
        self._build(kind)
        for key in [k for k in self.active if k[0] == kind]:
            del self.active[key]

    # ------------------------------------------------------------------ inputs

    def observe_steps(self, records: list[StepRecord]) -> list[Change]:
        batch = StepBatch.from_records(records, len(self.info.variables), len(self.info.bn_layers))
        changes: list[Change] = []
        for kind, rule in list(self.rules.items()):
            self._apply(kind, "steps", rule.observe(batch), changes)
        return changes

    def observe_probe(self, probe: Probe) -> list[Change]:
        changes: list[Change] = []
        for kind, rule in list(self.rules.items()):
            self._apply(kind, "probe", rule.observe_probe(probe), changes)
        return changes

    def origin(self, msg: NonfiniteOrigin) -> Change | None:
        """Attach where a non-finite step came from to its alert (or to the next one raised)."""
        if "nonfinite" not in self.rules:
            return None
        alerts = [a for a in self.open.values() if a.kind == "nonfinite"]
        if not alerts:
            if self.pending_origin is None or msg.step < self.pending_origin.step:
                self.pending_origin = msg  # the first bad step says where it started
            return None
        covering = [a for a in alerts if a.step <= msg.step <= a.last_step]
        alert = max(covering or alerts, key=lambda a: a.updated_at)
        known = alert.evidence.get("origin_step")
        if isinstance(known, int) and known <= msg.step:
            return None  # a later step's origin never replaces where the trouble started
        self._set_origin(alert, msg)
        self.dirty.discard(alert)
        return Change(alert, created=False)

    def _set_origin(self, alert: Alert, msg: NonfiniteOrigin) -> None:
        alert.evidence.update({"origin_step": msg.step, "origin_source": msg.source, "origin_layer": msg.layer,
                               "origin_detail": msg.detail or None})
        self._say(alert)
        alert.updated_at = time.time()

    def _say(self, alert: Alert) -> None:
        alert.message = message(alert.kind, alert.step, alert.layer, alert.evidence)
        alert.remedies = remedies(alert.kind, alert.evidence)

    def _link_cause(self, alert: Alert) -> None:
        """A non-finite alert names the open alert that preceded it (exploding gradients, frozen BatchNorm)."""
        if "preceded_by" in alert.evidence:
            return
        for kind in ("exploding_gradients", "frozen_batchnorm"):
            before = [a for a in self.open.values() if a.kind == kind and a.step <= alert.step]
            if before:
                first = min(before, key=lambda a: a.step)
                alert.evidence.update({"preceded_by": kind, "preceded_since_step": first.step,
                                       "preceded_layer": first.layer})
                return

    # ------------------------------------------------------------------ episodes

    def _apply(self, kind: str, source: str, hits: list[Hit], changes: list[Change]) -> None:
        now = time.time()
        seen: set[tuple[str, str, str | None]] = set()
        for hit in hits:
            key = (kind, source, hit.key)
            seen.add(key)
            alert = self.active.get(key)
            severity = hit.severity or SEVERITY[kind]
            if alert is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[alert.severity]:
                alert.last_step = max(alert.last_step, hit.last_step)  # the same episode goes on
                alert.evidence.update(hit.evidence)
                self._say(alert)
                alert.updated_at = now
                self.dirty.add(alert)
                continue
            alert = alert or self.open.get((kind, hit.layer))
            escalated = False
            if alert is None:
                alert = Alert(self.run_id, kind, severity, hit.step, hit.last_step, hit.layer, list(hit.layers),
                              dict(hit.evidence), "", [], created_at=now, updated_at=now)
                self.open[(kind, hit.layer)] = alert
                created = True
            else:
                if SEVERITY_RANK[severity] > SEVERITY_RANK[alert.severity]:  # what it was is not what it is
                    alert.severity, alert.step, alert.evidence, escalated = severity, hit.step, {}, True
                alert.count += 1
                alert.last_step = max(alert.last_step, hit.last_step)
                alert.layers = list(dict.fromkeys([*alert.layers, *hit.layers]))
                alert.evidence.update(hit.evidence)
                alert.updated_at = now
                created = False
            if kind == "nonfinite" and alert.severity != "info":
                self._link_cause(alert)
                if self.pending_origin is not None:
                    self._set_origin(alert, self.pending_origin)
                    self.pending_origin = None
            self._say(alert)
            self.active[key] = alert
            self.dirty.discard(alert)
            changes.append(Change(alert, created, escalated))
        for key in [k for k in self.active if k[0] == kind and k[1] == source and k not in seen]:
            del self.active[key]

    def take_dirty(self) -> list[Alert]:
        out = [a for a in self.dirty if a.id]
        self.dirty.clear()
        return out
