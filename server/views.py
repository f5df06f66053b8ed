"""JSON objects the server hands out (REST bodies and browser messages), as pydantic models."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, create_model

from gradwatch.protocol import (
    AlertCounts,
    ClipMode,
    ClipView,
    CommandState,
    CommandView,
    GapView,
    RunState,
    RunSummary,
    StepRecord,
    VariableSetView,
    WireFloat,
    dumps,
    encode_float,
)
from gradwatch.stepfields import NULLABLE, StepField

from .metrics import BN_KEYS
from .stepcodec import STORED
from .store import CommandRow, GapRow, RunRow


class StoreHealth(BaseModel):
    """The step writer's and the database disk's state (``server/writer.py``)."""

    writing: bool = Field(description="steps reach the database (false: writes fail, trainers are refused)")
    error: str | None = Field(description="why writes fail, e.g. 'database or disk is full'")
    pending_steps: int = Field(description="steps received and kept in memory, not yet written")
    dropped_steps: int = Field(description="steps the database rejected since start (logged once per cause)")
    disk_free_bytes: int | None = Field(description="free space where the database lives")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field("ok", description="degraded while the store cannot write")
    protocol: int
    #: Asked for with ``?proof=<nonce>``: ``tokens.token_proof`` (the server knows the token; it never sends it).
    proof: str | None = None
    store: StoreHealth | None = None


class RunDetail(RunState):
    variables: list[str]
    bn_layers: list[str]
    relu_layers: list[str]


class CommandAccepted(BaseModel):
    id: int
    state: CommandState


class LoginCode(BaseModel):
    code: str = Field(description="use once, as /login?code=CODE")
    expires_in: float = Field(description="seconds the code stays valid if unused")


class ErrorBody(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None


#: One series per ``BN_FIELDS`` column, under its metrics key (``metrics.BN_KEYS``).
BnSeries: type[BaseModel] = create_model("BnSeries", **{key: (list[WireFloat | None], ...) for key in BN_KEYS})  # type: ignore[call-overload]


class ProbeSeries(BaseModel):
    step: list[int]
    dead_relu: dict[str, list[WireFloat | None]]
    bn_gap: dict[str, list[WireFloat | None]]


class _MetricsBase(BaseModel):
    run_id: int
    probe: ProbeSeries
    gaps: list[GapView]
    downsampled: bool


def _series_type(f: StepField) -> Any:
    """The metrics series of one stored step field (``metrics.build_metrics`` writes it by the same storage)."""
    item: Any = {"count": int, "float": float, "bool": bool, "clip_mode": ClipMode}.get(f.kind, WireFloat | None)
    if f.storage == "u32_sum_blob":
        item = int
    if f.shape == "bn_layer":
        return dict[str, BnSeries]
    return list[item] if f.shape == "scalar" else dict[str, list[item]]


#: Column-wise series of one run; every list has one entry per returned step (derived from the step fields).
Metrics: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Metrics",
    __base__=_MetricsBase,
    __doc__="Column-wise series of one run; every list has one entry per returned step.",
    **{f.stored_as: (_series_type(f), ...) for f in STORED},
)


class AlertRulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: StrictBool | None = None
    params: dict[str, Any] | None = None


def summary(run: RunRow, alerts: dict[str, int] | None = None) -> RunSummary:
    return RunSummary(
        id=run.id,
        name=run.name,
        status=run.status,
        step=run.last_step,
        created_at=run.created_at,
        updated_at=run.updated_at,
        alerts=AlertCounts(**(alerts or {})),
        tags=run.tags,
        note=run.note,
    )


def _clip(run: RunRow) -> ClipView:
    t = run.clip_threshold
    return ClipView(mode=run.clip_mode, threshold=None if t is None else encode_float(t))


def _gaps(gaps: list[GapRow]) -> list[GapView]:
    return [GapView(**dataclasses.asdict(g)) for g in gaps]


def run_state(
    run: RunRow, gaps: list[GapRow], alerts: dict[str, int] | None = None, snapshots: list[int] | None = None
) -> RunState:
    return RunState(
        **summary(run, alerts).model_dump(),
        clip=_clip(run),
        paused=run.status == "paused",
        every=run.every,
        meta=run.meta,
        gaps=_gaps(gaps),
        lr=run.lr,
        pause_on=run.pause_on,
        guard_nonfinite=run.guard_nonfinite,
        variable_sets=[VariableSetView(from_step=int(f), variables=list(v)) for f, v in run.variable_sets],
        snapshots=snapshots or [],
    )


def run_detail(
    run: RunRow, gaps: list[GapRow], alerts: dict[str, int] | None = None, snapshots: list[int] | None = None
) -> RunDetail:
    return RunDetail(
        **run_state(run, gaps, alerts, snapshots).model_dump(),
        variables=run.variables,
        bn_layers=run.bn_layers,
        relu_layers=run.relu_layers,
    )


def command_view(cmd: CommandRow) -> CommandView:
    return CommandView(
        id=cmd.id,
        run_id=cmd.run_id,
        type=cmd.type,
        mode=cmd.mode,
        threshold=cmd.threshold,
        lr=cmd.lr,
        group=cmd.group,
        step=cmd.step,
        origin=cmd.origin,
        created_at=cmd.created_at,
        state=cmd.state,
        applied_step=cmd.applied_step,
        detail=cmd.detail,
        updated_at=cmd.updated_at,
    )


_RECORDS = TypeAdapter(list[StepRecord])


def steps_message(run_id: int, records: list[StepRecord]) -> str:
    """The browser ``steps`` message for ``records``, floats in the wire spelling.

    pydantic's serializer (compiled) is ~14x faster than ``model_dump`` + ``json.dumps`` and writes the
    same text, except that a float NaN/Infinity (a bare ``NaN`` token or ``1e999`` in the trainer's
    frame) would come out as ``null``. Every ``null`` it writes must therefore be an optional field
    that is ``None``; if there are more, such a value is present and the slow path spells it out.
    """
    body = _RECORDS.dump_json(records).decode()
    expected = sum(getattr(r, name) is None for r in records for name in NULLABLE)
    if body.count("null") != expected:
        body = dumps([r.model_dump() for r in records])
    return f'{{"type":"steps","run_id":{run_id},"records":{body}}}'
