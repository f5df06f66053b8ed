"""Property tests for the wire protocol's float encoding and decoders."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gradwatch.protocol import (
    Command,
    decode_float,
    dumps,
    encode_float,
    parse_browser_message,
    parse_trainer_message,
)

any_float = st.floats(allow_nan=True, allow_infinity=True)


@given(any_float)
def test_float_round_trip(x):
    y = decode_float(encode_float(x))
    assert (math.isnan(x) and math.isnan(y)) or x == y


@given(st.lists(any_float, max_size=20))
def test_dumps_is_strict_json(values):
    text = dumps({"v": values})
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in output"))


@given(st.text(max_size=20).filter(lambda s: s not in ("NaN", "Infinity", "-Infinity")))
def test_other_strings_are_not_floats(s):
    with pytest.raises(ValueError):
        decode_float(s)


def _record(step, norm):
    return {
        "step": step,
        "epoch": 0,
        "time": 1.0,
        "global_norm": norm,
        "clip_mode": "global_norm",
        "clip_scale": 1.0,
        "clipped": False,
        "grad_norm": [norm],
        "grad_nan": [0],
        "grad_inf": [0],
    }


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**40), any_float)
def test_steps_round_trip(step, norm):
    msg = parse_trainer_message(dumps({"type": "steps", "records": [_record(step, norm)]}))
    rec = msg.records[0]  # type: ignore[union-attr]
    got = decode_float(rec.global_norm)
    assert rec.step == step
    assert (math.isnan(norm) and math.isnan(got)) or got == norm


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.none(), st.booleans(), st.integers(), any_float, st.text(max_size=8), st.lists(st.integers(), max_size=3)
    )
)
def test_trainer_decoder_never_crashes(value):
    for msg in (
        {"type": "steps", "records": [_record(value, 1.0)]},
        {"type": "ack", "id": value, "state": "applied"},
        {"type": value},
        {"type": "status", "state": "running", "step": value},
    ):
        with contextlib.suppress(ValidationError):
            parse_trainer_message(json.dumps(msg))


@given(st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.none()))
def test_set_clip_threshold_rule(t):
    ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and 0 < t <= 1e9
    try:
        Command.model_validate({"type": "set_clip", "threshold": t})
        assert ok
    except ValidationError:
        assert not ok


@given(st.integers() | st.none())
def test_subscribe(run_id):
    assert parse_browser_message(json.dumps({"type": "subscribe", "run_id": run_id})).run_id == run_id  # type: ignore[union-attr]


def test_step_record_floats_follow_their_declared_kind():
    """``stepfields`` kind ``float``: a finite JSON number only; ``wire_float``: finite or the protocol's spelling.
    Neither takes a bare NaN/Infinity token or 1e999 (issue 17: a NaN time wedged the store)."""
    import json

    from pydantic import ValidationError

    from gradwatch.protocol import StepRecord
    from gradwatch.stepfields import STEP_FIELDS

    base = {
        "step": 1,
        "epoch": 0,
        "time": 1.0,
        "global_norm": 1.0,
        "clip_mode": "global_norm",
        "clip_scale": 1.0,
        "clipped": False,
        "grad_norm": [1.0],
        "grad_nan": [0],
        "grad_inf": [0],
    }
    for f in STEP_FIELDS:
        if f.kind not in ("float", "wire_float"):
            continue
        value: object = 2.5 if f.shape == "scalar" else [2.5] if f.shape == "variable" else [[2.5] * 8]
        text = json.dumps({**base, f.name: value})
        StepRecord.model_validate_json(text)
        for bad in ("NaN", "Infinity", "-Infinity", "1e999"):
            with pytest.raises(ValidationError, match="finite"):
                StepRecord.model_validate_json(text.replace("2.5", bad))
        spelt = StepRecord.model_validate_json(text.replace("2.5", '"NaN"')) if f.kind == "wire_float" else None
        if f.kind == "float":
            with pytest.raises(ValidationError):
                StepRecord.model_validate_json(text.replace("2.5", '"NaN"'))
        else:
            assert spelt is not None
