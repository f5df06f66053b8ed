"""JSON objects the server hands out (REST bodies and browser messages), as pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter

from gradwatch.protocol import (
    AlertKind,
    ClipMode,
    CommandState,
    CommandType,
    RunStatus,
    StepRecord,
    WireFloat,
    dumps,
    encode_float,
)

from .store import CommandRow, GapRow, RunRow


class Health(BaseModel):
    status: str = "ok"
    protocol: int


class ClipView(BaseModel):
    mode: ClipMode
    threshold: WireFloat | None


class GapView(BaseModel):
    from_step: int
    to_step: int
    dropped: int


class AlertCounts(BaseModel):
    info: int = 0
    warning: int = 0
    critical: int = 0


class RunSummary(BaseModel):
    id: int
    name: str
    status: RunStatus
    step: int | None = Field(description="last step received")
    created_at: float
    updated_at: float
    alerts: AlertCounts = Field(default_factory=AlertCounts, description="alerts raised on this run, by severity")


class RunState(RunSummary):
    """What the browser's ``run`` message carries: a run without its variable lists."""

    clip: ClipView
    paused: bool
    every: int
    meta: dict[str, Any]
    gaps: list[GapView]
    lr: float | None = Field(description="learning rate of the latest step that reported one (or of an applied "
                                         "set_lr until the next step reports)")
    pause_on: list[AlertKind]
    guard_nonfinite: bool


class RunDetail(RunState):
    variables: list[str]
    bn_layers: list[str]
    relu_layers: list[str]


class CommandView(BaseModel):
    id: int
    run_id: int
    type: CommandType
    mode: ClipMode | None
    threshold: float | None
    lr: float | None
    origin: str
    created_at: float
    state: CommandState
    applied_step: int | None
    detail: str | None
    updated_at: float


class CommandAccepted(BaseModel):
    id: int
    state: CommandState


class ErrorBody(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None


class BnSeries(BaseModel):
    moving_mean: list[WireFloat | None]
    moving_variance: list[WireFloat | None]
    moving_mean_min: list[WireFloat | None]
    moving_mean_max: list[WireFloat | None]
    moving_mean_delta: list[WireFloat | None]
    moving_variance_min: list[WireFloat | None]
    moving_variance_max: list[WireFloat | None]
    moving_variance_delta: list[WireFloat | None]


class ProbeSeries(BaseModel):
    step: list[int]
    dead_relu: dict[str, list[WireFloat | None]]
    bn_gap: dict[str, list[WireFloat | None]]


class Metrics(BaseModel):
    """Column-wise series of one run; every list has one entry per returned step."""

    run_id: int
    step: list[int]
    epoch: list[int]
    time: list[float]
    loss: list[WireFloat | None]
    lr: list[WireFloat | None]
    global_norm: list[WireFloat | None]
    clip_threshold: list[WireFloat | None]
    clip_scale: list[WireFloat | None]
    clipped: list[bool]
    clipped_fraction: list[WireFloat | None]
    steps_per_sec: list[WireFloat | None]
    weight_nonfinite: list[int]
    loss_nonfinite: list[bool]
    grad_norm: dict[str, list[WireFloat | None]]
    nonfinite: dict[str, list[int]]
    bn: dict[str, BnSeries]
    update_ratio: dict[str, list[WireFloat | None]]
    skipped: list[bool]
    probe: ProbeSeries
    gaps: list[GapView]
    downsampled: bool


class AlertView(BaseModel):
    """One alert (docs/alerts.md). ``step``: first seen; ``count``: episodes (1 when raised)."""

    id: int
    run_id: int
    kind: AlertKind
    severity: Literal["info", "warning", "critical"]
    step: int
    last_step: int
    layer: str | None
    layers: list[str]
    evidence: dict[str, WireFloat | int | str | None]
    message: str
    remedies: list[str]
    count: int
    created_at: float
    updated_at: float


class AlertRuleView(BaseModel):
    muted: bool
    params: dict[str, float | int]


class AlertRulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: StrictBool | None = None
    params: dict[str, Any] | None = None


def summary(run: RunRow, alerts: dict[str, int] | None = None) -> RunSummary:
    return RunSummary(id=run.id, name=run.name, status=run.status, step=run.last_step,
                      created_at=run.created_at, updated_at=run.updated_at, alerts=AlertCounts(**(alerts or {})))


def _clip(run: RunRow) -> ClipView:
    t = run.clip_threshold
    return ClipView(mode=run.clip_mode, threshold=None if t is None else encode_float(t))


def _gaps(gaps: list[GapRow]) -> list[GapView]:
    return [GapView(from_step=g.from_step, to_step=g.to_step, dropped=g.dropped) for g in gaps]


def run_state(run: RunRow, gaps: list[GapRow], alerts: dict[str, int] | None = None) -> RunState:
    return RunState(**summary(run, alerts).model_dump(), clip=_clip(run), paused=run.status == "paused",
                    every=run.every, meta=run.meta, gaps=_gaps(gaps), lr=run.lr, pause_on=run.pause_on,
                    guard_nonfinite=run.guard_nonfinite)


def run_detail(run: RunRow, gaps: list[GapRow], alerts: dict[str, int] | None = None) -> RunDetail:
    return RunDetail(**run_state(run, gaps, alerts).model_dump(), variables=run.variables, bn_layers=run.bn_layers,
                     relu_layers=run.relu_layers)


def command_view(cmd: CommandRow) -> CommandView:
    return CommandView(id=cmd.id, run_id=cmd.run_id, type=cmd.type,
                       mode=cmd.mode, threshold=cmd.threshold, lr=cmd.lr,
                       origin=cmd.origin, created_at=cmd.created_at, state=cmd.state,
                       applied_step=cmd.applied_step, detail=cmd.detail, updated_at=cmd.updated_at)


_RECORDS = TypeAdapter(list[StepRecord])
#: StepRecord fields that may be ``null`` on the wire (not reported).
_OPTIONAL = ("loss", "lr", "clip_threshold", "clipped_fraction", "steps_per_sec", "update_ratio")


def steps_message(run_id: int, records: list[StepRecord]) -> str:
    """The browser ``steps`` message for ``records``, floats in the wire spelling.

    pydantic's serializer (compiled) is ~14x faster than ``model_dump`` + ``json.dumps`` and writes the
    same text, except that a float NaN/Infinity (a bare ``NaN`` token or ``1e999`` in the trainer's
    frame) would come out as ``null``. Every ``null`` it writes must therefore be an optional field
    that is ``None``; if there are more, such a value is present and the slow path spells it out.
    """
    body = _RECORDS.dump_json(records).decode()
    expected = sum(getattr(r, name) is None for r in records for name in _OPTIONAL)
    if body.count("null") != expected:
        body = dumps([r.model_dump() for r in records])
    return f'{{"type":"steps","run_id":{run_id},"records":{body}}}'
