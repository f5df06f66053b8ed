"""The control commands the page posts and the server forwards to the trainer: their parameters and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from ..wirejson import WireStep
from .common import _Msg
from .vocabulary import COMMANDS, ClipMode, CommandType

#: Upper bound on a clip threshold; anything larger is a typo, not a setting.
MAX_CLIP_THRESHOLD = 1e9

#: Upper bound on a learning rate set from the page.
MAX_LEARNING_RATE = 1e3


@dataclass(frozen=True)
class CommandParams:
    """The ``Command`` parameters a command type needs and those it may also take (it takes no others)."""

    needs: tuple[str, ...] = ()
    takes: tuple[str, ...] = ()
    #: What a needed parameter is, with an example command (the error message's fix).
    hint: str = ""


#: Every command type's parameters, in ``CommandType``'s order.
COMMAND_PARAMS: dict[str, CommandParams] = {
    "pause": CommandParams(),
    "resume": CommandParams(),
    "stop": CommandParams(),
    "set_clip": CommandParams(
        ("threshold",), ("mode", "group"), "a finite number > 0, e.g. {'type': 'set_clip', 'threshold': 1.0}"
    ),
    "set_lr": CommandParams(("lr",), ("group",), "a finite number > 0, e.g. {'type': 'set_lr', 'lr': 0.001}"),
    # every optimizer of the run is restored: no group
    "rewind": CommandParams(
        ("step",),
        ("lr", "threshold", "mode", "auto"),
        "a snapshot step the run holds (run.snapshots), e.g. {'type': 'rewind', 'step': 200}",
    ),
}
if tuple(COMMAND_PARAMS) != COMMANDS:
    raise TypeError(f"COMMAND_PARAMS {tuple(COMMAND_PARAMS)} differ from CommandType {COMMANDS}")


class ClipSetting(_Msg):
    mode: ClipMode = "global_norm"
    #: ``None`` means "measure, clip nothing".
    threshold: Annotated[StrictFloat, Field(gt=0, le=MAX_CLIP_THRESHOLD, allow_inf_nan=False)] | None = None


class Command(_Msg):
    """A control command, as posted by the page and forwarded to the trainer.

    ``set_clip`` needs a finite positive ``threshold``; ``mode`` defaults to the
    run's current mode. ``set_lr`` needs a finite positive ``lr``. Either may name
    an optimizer ``group`` (a run with several, ``meta.optimizer_groups``): only that
    optimizer changes; without it every group does. The other types take no parameters.
    """

    type: CommandType
    mode: ClipMode | None = None
    threshold: Annotated[StrictFloat | StrictInt, Field(gt=0, le=MAX_CLIP_THRESHOLD, allow_inf_nan=False)] | None = None
    lr: Annotated[StrictFloat | StrictInt, Field(gt=0, le=MAX_LEARNING_RATE, allow_inf_nan=False)] | None = None
    group: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    #: ``rewind``: restore the newest snapshot the trainer holds taken at or before this step
    #: (``RunState.snapshots`` lists them).
    step: WireStep | None = None
    #: ``rewind`` only: ``True`` when posted by the server for ``rewind_on`` (the trainer scales its learning rate
    #: by its ``rewind_lr_factor`` unless ``lr`` is given, and counts it against ``max_rewinds``); absent otherwise.
    auto: StrictBool | None = None

    @model_validator(mode="after")
    def _parameters_match_type(self) -> Command:
        spec = COMMAND_PARAMS[self.type]
        for name in spec.needs:
            if getattr(self, name) is None:
                raise ValueError(f"{self.type} needs {name!r}: {spec.hint}")
        given = [n for n in _COMMAND_PARAMETERS if getattr(self, n) is not None]
        extra = [n for n in given if n not in (*spec.needs, *spec.takes)]
        if extra and not (spec.needs or spec.takes):
            takers = [t for t, p in COMMAND_PARAMS.items() if p.needs or p.takes]
            raise ValueError(f"{self.type!r} takes no parameters; only {' and '.join(takers)} do")
        if extra:
            owners = [t for t, p in COMMAND_PARAMS.items() if set(extra) & {*p.needs, *p.takes}]
            raise ValueError(
                f"{self.type} takes no {' or '.join(map(repr, extra))}; send a separate {' or '.join(owners)} command"
            )
        return self


#: ``Command``'s fields other than ``type``: what ``COMMAND_PARAMS`` entries may name.
_COMMAND_PARAMETERS: tuple[str, ...] = tuple(n for n in Command.model_fields if n != "type")
_unknown = {t: c for t, c in COMMAND_PARAMS.items() if not set(c.needs + c.takes) <= set(_COMMAND_PARAMETERS)}
if _unknown:
    raise TypeError(f"COMMAND_PARAMS name parameters Command does not have: {_unknown}")
