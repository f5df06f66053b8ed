"""Per-run alert bookkeeping: runs the rules on every batch and probe, one open alert per (kind, layer).

``RunAlerts`` is synchronous and does no I/O. It returns ``Change``s that must be
saved and pushed now (an alert raised, a new episode of one re-opened, one
resolved, or given its non-finite origin), and collects continuations (the same
episode still going: ``last_step`` and ``latest`` move on) in ``dirty`` for the
caller to save at its own pace.

Lifecycle (docs/alerts.md): an open alert resolves at the first step its rule
checked once the condition has been clear for the kind's ``clear_steps`` (a
class attribute of its rule) after ``last_step``. A condition that holds again
after that opens a new alert, the next episode (``count`` + 1); one that returns
sooner continues the open alert. The evidence and message an alert was raised
with stay as they were; what its rule sees later goes to ``latest``, at its own step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from gradwatch.protocol import AlertState, AlertView, NonfiniteOrigin, Probe, StepRecord

from .kinds import RULE_TYPES as RULE_TYPES
from .kinds import SPECS
from .params import settings
from .rules import Hit, Rule, RunInfo
from .series import StepBatch
from .spec import Evidence, RuleSettings
from .texts import SEVERITY_RANK

#: What a change announces (the webhook's ``event``): a first episode raised (or an open alert's severity risen),
#: a later episode opened, or an episode resolved.
AlertEvent = Literal["raised", "reopened", "resolved"]
Source = Literal["steps", "probe"]


def clear_steps(kind: str) -> int:
    return SPECS[kind].clear_steps


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
    state: AlertState = "open"
    resolved_step: int | None = None
    #: ``{"step", "evidence", "message"}``: the rule's newest finding in this episode after the raise.
    latest: dict[str, Any] | None = None
    #: Which inputs raised or continued it (not stored): only those can see its condition clear.
    sources: set[str] = field(default_factory=set, repr=False)

    def view(self) -> dict[str, Any]:
        """The protocol's ``AlertView`` of it: its fields, copied (lists and dicts are the alert's own)."""
        out = {name: getattr(self, name) for name in AlertView.model_fields}
        out.update(layers=list(self.layers), evidence=dict(self.evidence), remedies=list(self.remedies))
        if self.latest is not None:
            out["latest"] = {**self.latest, "evidence": dict(self.latest["evidence"])}
        return out


_missing = set(AlertView.model_fields) - {f.name for f in fields(Alert)}
if _missing:
    raise TypeError(f"Alert has no field for AlertView's {sorted(_missing)}")


def _stored_sources(alert: Alert) -> set[str]:
    """The sources of an alert read back from the store: only probe hits carry ``probes`` in their evidence."""
    return {"probe"} if "probes" in alert.evidence else {"steps"}


@dataclass
class Change:
    alert: Alert
    #: ``None``: an update that announces nothing (a non-finite origin added).
    event: AlertEvent | None

    @property
    def opened(self) -> bool:
        """Raised or re-opened at warning or critical: what ``pause_on`` acts on (information never pauses)."""
        return self.event in ("raised", "reopened") and self.alert.severity != "info"


class RunAlerts:
    def __init__(
        self,
        run_id: int,
        info: RunInfo,
        rules: dict[str, RuleSettings] | None = None,
        existing: list[Alert] | None = None,
    ) -> None:
        self.run_id = run_id
        self.info = info
        self.settings = {k: (rules or {}).get(k) or settings(k) for k in RULE_TYPES}
        self.rules: dict[str, Rule] = {}
        for kind in RULE_TYPES:
            self._build(kind)
        self.open: dict[tuple[str, str | None], Alert] = {}
        #: The number of the newest episode of each (kind, layer), open or resolved.
        self.episodes: dict[tuple[str, str | None], int] = {}
        for a in existing or []:
            key = (a.kind, a.layer)
            self.episodes[key] = max(self.episodes.get(key, 0), a.count)
            if a.state == "open":
                a.sources = _stored_sources(a)
                self.open[key] = a
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
            self._apply(kind, "steps", rule.observe(batch), rule.checked_steps(batch).tolist(), changes)
        return changes

    def observe_probe(self, probe: Probe) -> list[Change]:
        changes: list[Change] = []
        for kind, rule in list(self.rules.items()):
            self._apply(kind, "probe", rule.observe_probe(probe), [probe.step], changes)
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
        return Change(alert, None)

    def _set_origin(self, alert: Alert, msg: NonfiniteOrigin) -> None:
        # Part of what raised the alert (where its first bad step came from), so it joins the raise evidence.
        alert.evidence.update(
            {
                "origin_step": msg.step,
                "origin_source": msg.source,
                "origin_layer": msg.layer,
                "origin_detail": msg.detail or None,
            }
        )
        self._say(alert)
        alert.updated_at = time.time()

    def _say(self, alert: Alert) -> None:
        spec = SPECS[alert.kind]
        alert.message = spec.message(alert.step, alert.layer, alert.evidence)
        alert.remedies = spec.remedies_for(alert.evidence)

    def _link_cause(self, alert: Alert) -> None:
        """A non-finite alert names the open alert that preceded it (exploding gradients, frozen BatchNorm)."""
        if "preceded_by" in alert.evidence:
            return
        for kind in ("exploding_gradients", "frozen_batchnorm"):
            before = [a for a in self.open.values() if a.kind == kind and a.step <= alert.step]
            if before:
                first = min(before, key=lambda a: a.step)
                alert.evidence.update(
                    {"preceded_by": kind, "preceded_since_step": first.step, "preceded_layer": first.layer}
                )
                return

    # ------------------------------------------------------------------ episodes

    def _resolve_by(self, alert: Alert, source: str, checked: Iterable[int], before: float) -> int | None:
        """The first checked step before ``before`` at which ``alert``'s condition had been clear long enough."""
        if source not in alert.sources:
            return None
        due = alert.last_step + clear_steps(alert.kind)
        return next((s for s in checked if due <= s < before), None)

    def _resolve(self, alert: Alert, step: int, now: float, changes: list[Change]) -> None:
        alert.state, alert.resolved_step, alert.updated_at = "resolved", step, now
        self.open.pop((alert.kind, alert.layer), None)
        for key in [k for k, a in self.active.items() if a is alert]:
            del self.active[key]
        self.dirty.discard(alert)
        changes.append(Change(alert, "resolved"))

    def _open(self, kind: str, severity: str, hit: Hit, now: float) -> tuple[Alert, AlertEvent]:
        key = (kind, hit.layer)
        count = self.episodes.get(key, 0) + 1
        self.episodes[key] = count
        alert = Alert(
            self.run_id,
            kind,
            severity,
            hit.step,
            hit.last_step,
            hit.layer,
            list(hit.layers),
            dict(hit.evidence),
            "",
            [],
            count=count,
            created_at=now,
            updated_at=now,
        )
        self.open[key] = alert
        return alert, "raised" if count == 1 else "reopened"

    def _apply(self, kind: str, source: Source, hits: list[Hit], checked: list[int], changes: list[Change]) -> None:
        now = time.time()
        seen: set[tuple[str, str, str | None]] = set()
        hit_alerts: set[int] = set()
        for hit in hits:
            key = (kind, source, hit.key)
            seen.add(key)
            alert = self.active.get(key) or self.open.get((kind, hit.layer))
            if alert is not None:
                done = self._resolve_by(alert, source, checked, hit.step)
                if done is not None:  # clear long enough inside this batch, then back: a new episode
                    self._resolve(alert, done, now, changes)
                    alert = None
            severity = hit.severity or SPECS[kind].severity
            if alert is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[alert.severity]:
                # The episode goes on: what raised it stays as it was, the newest finding is its update.
                alert.last_step = max(alert.last_step, hit.last_step)
                alert.sources.add(source)
                alert.latest = {
                    "step": hit.step,
                    "evidence": dict(hit.evidence),
                    "message": SPECS[kind].message(hit.step, alert.layer, hit.evidence),
                }
                alert.updated_at = now
                self.active[key] = alert
                self.dirty.add(alert)
                hit_alerts.add(id(alert))
                continue
            event: AlertEvent
            if alert is None:
                alert, event = self._open(kind, severity, hit, now)
            else:  # what it was is not what it is: raised anew at the higher severity
                alert.severity, alert.step, alert.evidence, alert.latest, event = (
                    severity,
                    hit.step,
                    dict(hit.evidence),
                    None,
                    "raised",
                )
                alert.last_step = max(alert.last_step, hit.last_step)
                alert.layers = list(dict.fromkeys([*alert.layers, *hit.layers]))
                alert.updated_at = now
            alert.sources.add(source)
            if kind == "nonfinite" and alert.severity != "info":
                self._link_cause(alert)
                if self.pending_origin is not None:
                    self._set_origin(alert, self.pending_origin)
                    self.pending_origin = None
            self._say(alert)
            self.active[key] = alert
            self.dirty.discard(alert)
            hit_alerts.add(id(alert))
            changes.append(Change(alert, event))
        for gone in [k for k in self.active if k[0] == kind and k[1] == source and k not in seen]:
            del self.active[gone]
        for alert in [a for a in self.open.values() if a.kind == kind and id(a) not in hit_alerts]:
            done = self._resolve_by(alert, source, checked, float("inf"))
            if done is not None:
                self._resolve(alert, done, now, changes)

    def take_dirty(self) -> list[Alert]:
        out = [a for a in self.dirty if a.id]
        self.dirty.clear()
        return out
