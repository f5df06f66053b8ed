"""The views the page receives (docs/protocol.md, "server -> browser"); REST returns the same shapes."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..records import ALERT_FIELDS, GAP_FIELDS
from ..records import check_model_fields as _check_record_fields
from ..wirejson import ServerFloat, WireCount, WireFloat
from .common import _View
from .vocabulary import SEVERITIES, AlertKind, AlertState, ClipMode, CommandState, CommandType, RunStatus, Severity


class ClipView(_View):
    mode: ClipMode
    threshold: WireFloat | None


class GapView(_View):
    from_step: int
    to_step: int
    dropped: int


_check_record_fields("GapView", tuple(GapView.model_fields), GAP_FIELDS)


class VariableSetView(_View):
    """From ``from_step`` on, the run's step vectors cover these variables (indices into its ``variables``)."""

    from_step: int
    variables: list[int]


class AlertCounts(_View):
    """A run's alerts by severity: one field per ``Severity``."""

    info: int = 0
    warning: int = 0
    critical: int = 0


if tuple(AlertCounts.model_fields) != SEVERITIES:
    raise TypeError(f"AlertCounts fields {tuple(AlertCounts.model_fields)} differ from Severity {SEVERITIES}")


class RunSummary(_View):
    id: int
    name: str
    status: RunStatus
    step: int | None = Field(description="last step received")
    created_at: float
    updated_at: float
    alerts: AlertCounts = Field(default_factory=AlertCounts, description="alerts raised on this run, by severity")
    tags: list[str] = Field(default_factory=list, description="the user's labels (PATCH /api/runs/{id})")
    note: str = Field(default="", description="the user's free-text note")


class RunState(RunSummary):
    """What the browser's ``run`` message carries: a run without its variable lists."""

    clip: ClipView
    paused: bool
    every: int
    meta: dict[str, Any]
    gaps: list[GapView]
    lr: float | None = Field(
        description="learning rate of the latest step that reported one (or of an applied "
        "set_lr until the next step reports)"
    )
    pause_on: list[AlertKind]
    guard_nonfinite: bool
    variable_sets: list[VariableSetView] = Field(
        default_factory=list,
        description="where the watched variables changed within the run, in step order ([]: all of them throughout)",
    )
    snapshots: list[int] = Field(
        default_factory=list,
        description="steps the connected trainer can rewind to "
        "(the newest Snapshots message; [] when none, or no trainer is connected)",
    )


class CommandView(_View):
    id: int
    run_id: int
    type: CommandType
    mode: ClipMode | None
    threshold: float | None
    lr: float | None
    group: str | None = None
    step: int | None = None
    origin: str
    created_at: float
    state: CommandState
    applied_step: int | None
    detail: str | None
    updated_at: float


class AlertUpdate(_View):
    """What an open alert's rule saw after raising it: the evidence at ``step`` and the message it makes."""

    step: int
    evidence: dict[str, WireFloat | int | str | None]
    message: str


class AlertView(_View):
    """One episode of an alert (docs/alerts.md). ``step``, ``evidence`` and ``message``: as raised (they never
    change, except a non-finite origin added to them); ``latest``: the newest update since; ``count``: the
    episode's number for its kind and layer (1 when first raised)."""

    id: int
    run_id: int
    kind: AlertKind
    severity: Severity
    step: int
    last_step: int
    layer: str | None
    layers: list[str]
    evidence: dict[str, ServerFloat | int | str | None]
    message: str
    remedies: list[str]
    count: int
    created_at: float
    updated_at: float
    state: AlertState
    #: The first step at which the condition had been clear for its kind's clear steps (``None`` while open).
    resolved_step: int | None
    latest: AlertUpdate | None


_check_record_fields("AlertView", tuple(AlertView.model_fields), ALERT_FIELDS)


class AlertRuleView(_View):
    muted: bool
    params: dict[str, float | int]


class ProbeView(_View):
    step: WireCount
    dead_relu: dict[str, WireFloat] = Field(default_factory=dict)
    bn_gap: dict[str, WireFloat] = Field(default_factory=dict)
