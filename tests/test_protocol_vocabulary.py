"""Each shared vocabulary is declared once in gradwatch/protocol/; what derives from it agrees."""

from __future__ import annotations

from typing import Any

import pytest
from gradwatch.trainer_hooks import control
from pydantic import ValidationError

from gradwatch.protocol import (
    CLIP_MODES,
    COMMAND_PARAMS,
    COMMANDS,
    RUN_STATUSES,
    TRAINER_STATES,
    Command,
    check_clip_mode,
)

VALUES: dict[str, Any] = {"threshold": 1.0, "lr": 0.01, "mode": "norm", "group": "g", "step": 4, "auto": True}


@pytest.mark.parametrize("kind", COMMANDS)
def test_each_command_takes_exactly_its_declared_parameters(kind: str) -> None:
    spec = COMMAND_PARAMS[kind]
    needed = {n: VALUES[n] for n in spec.needs}
    Command(type=kind, **needed)
    Command(type=kind, **needed, **{n: VALUES[n] for n in spec.takes})
    for name in spec.needs:
        with pytest.raises(ValidationError, match=rf"{kind} needs '{name}'"):
            Command(type=kind, **{n: v for n, v in needed.items() if n != name})
    for name in set(VALUES) - {*spec.needs, *spec.takes}:
        with pytest.raises(ValidationError, match="takes no"):
            Command(type=kind, **needed, **{name: VALUES[name]})


def test_the_trainer_handles_every_command_and_reports_only_protocol_states() -> None:
    assert tuple(control._TRANSITIONS) == COMMANDS
    reported = {s.value for s in control.ControlState} - {"stopping"}
    assert reported <= set(TRAINER_STATES) and set(TRAINER_STATES) < set(RUN_STATUSES)


def test_a_bad_clip_mode_is_named_with_the_choices() -> None:
    assert [check_clip_mode(m) for m in CLIP_MODES] == list(CLIP_MODES)
    with pytest.raises(ValueError, match=r"clip_mode='Norm' is not one of \('global_norm', 'norm', 'value'\)"):
        check_clip_mode("Norm")
    with pytest.raises(ValueError, match="mode=None"):
        check_clip_mode(None, "mode")
