"""The page's link: what the browser sends (browser -> server) and the messages it receives (server -> browser)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, TypeAdapter

from ..records import GAP_FIELDS
from ..records import check_model_fields as _check_record_fields
from ..wirejson import WireCount, dumps
from .common import PROTOCOL_VERSION, _Msg, _View
from .trainer import StepRecord
from .views import AlertRuleView, AlertView, CommandView, ProbeView, RunState, RunSummary
from .vocabulary import AlertKind


class BrowserHello(_Msg):
    type: Literal["hello"]
    protocol: StrictInt


class Subscribe(_Msg):
    """Ask for live ``steps`` of one run (``None``: run list updates only)."""

    type: Literal["subscribe"]
    run_id: StrictInt | None


#: Runs one page may compare (``Compare.run_ids``).
MAX_COMPARE = 8


class Compare(_Msg):
    """Also receive the live ``steps`` of these runs (a comparison view); replaces the last list, ``[]`` ends it."""

    type: Literal["compare"]
    run_ids: list[StrictInt] = Field(max_length=MAX_COMPARE)


BrowserMessage = Annotated[BrowserHello | Subscribe | Compare, Field(discriminator="type")]
_browser_message: TypeAdapter[BrowserHello | Subscribe | Compare] = TypeAdapter(BrowserMessage)


def parse_browser_message(data: str | bytes) -> BrowserHello | Subscribe | Compare:
    return _browser_message.validate_json(data)


class ServerHello(_View):
    type: Literal["hello"] = "hello"
    protocol: StrictInt = PROTOCOL_VERSION


class RunsMessage(_View):
    """The run list, newest first, on connect."""

    type: Literal["runs"] = "runs"
    runs: list[RunSummary]


class RunMessage(_View):
    type: Literal["run"] = "run"
    run: RunState


class StepsMessage(_View):
    """Exactly the validated records of one trainer ``steps`` frame (``server/views.steps_message`` writes it)."""

    type: Literal["steps"] = "steps"
    run_id: StrictInt
    records: list[StepRecord]


class CommandUpdate(_View):
    type: Literal["command"] = "command"
    run_id: StrictInt
    command: CommandView


class GapMessage(_View):
    type: Literal["gap"] = "gap"
    run_id: StrictInt
    from_step: WireCount
    to_step: WireCount
    dropped: WireCount


_check_record_fields("GapMessage", tuple(n for n in GapMessage.model_fields if n not in ("type", "run_id")), GAP_FIELDS)


class ProbeMessage(_View):
    type: Literal["probe"] = "probe"
    run_id: StrictInt
    probe: ProbeView


class AlertMessage(_View):
    type: Literal["alert"] = "alert"
    run_id: StrictInt
    alert: AlertView


class AlertRulesMessage(_View):
    type: Literal["alert_rules"] = "alert_rules"
    run_id: StrictInt
    rules: dict[AlertKind, AlertRuleView]


PageMessage = (
    ServerHello
    | RunsMessage
    | RunMessage
    | StepsMessage
    | CommandUpdate
    | GapMessage
    | ProbeMessage
    | AlertMessage
    | AlertRulesMessage
)
_page_message: TypeAdapter[PageMessage] = TypeAdapter(Annotated[PageMessage, Field(discriminator="type")])


def page_message_text(message: PageMessage) -> str:
    """One server -> browser frame (floats in the wire spelling)."""
    return dumps(message.model_dump())


def parse_page_message(data: str | bytes) -> PageMessage:
    """Decode one server -> browser frame (as a page or a test would); raises pydantic.ValidationError."""
    return _page_message.validate_json(data)
