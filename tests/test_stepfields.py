"""The step record's one table (gradwatch/stepfields.py) and everything derived from it agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradwatch.server.stepcodec import FLOAT_COLUMNS, ROW_COLUMNS
from gradwatch.server.views import Metrics

from gradwatch import stepfields
from gradwatch.protocol import StepRecord

ROOT = Path(__file__).resolve().parents[1]


def test_the_page_constants_are_generated_from_the_table() -> None:
    on_disk = (ROOT / stepfields.JS_PATH).read_text()
    assert on_disk == stepfields.javascript(), (
        f"{stepfields.JS_PATH} is stale: run `python -m gradwatch.stepfields > {stepfields.JS_PATH}`"
    )


def test_the_wire_model_has_exactly_the_declared_fields() -> None:
    assert list(StepRecord.model_fields) == [f.name for f in stepfields.STEP_FIELDS]
    nullable = [
        name for name, info in StepRecord.model_fields.items() if not info.is_required() and info.default is None
    ]
    assert nullable == list(stepfields.NULLABLE)


def test_a_model_that_drifts_from_the_table_is_refused() -> None:
    fields = {f.name: f.nullable for f in stepfields.STEP_FIELDS}
    stepfields.check_model_fields(fields)
    with pytest.raises(TypeError, match="differ"):
        stepfields.check_model_fields({**fields, "global_norm": True})
    with pytest.raises(TypeError, match="differ"):
        stepfields.check_model_fields({k: v for k, v in fields.items() if k != "skipped"})


def test_storage_and_metrics_cover_every_field() -> None:
    columns = {f.stored_as for f in stepfields.STEP_FIELDS}
    assert columns | {"run_id", "nan_mask"} == set(ROW_COLUMNS)
    assert columns <= set(Metrics.model_fields)
    # nan_mask bits are part of the file format: the first release's order must never change (later ones append)
    assert FLOAT_COLUMNS[:7] == (
        "loss",
        "lr",
        "global_norm",
        "clip_threshold",
        "clip_scale",
        "clipped_fraction",
        "steps_per_sec",
    )
