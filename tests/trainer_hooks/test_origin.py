"""``explain_nonfinite``: which cause a non-finite step is put down to, in order of evidence."""

from __future__ import annotations

import math
from typing import Any

import pytest
from gradwatch.trainer_hooks.origin import explain_nonfinite

CLEAN: dict[str, Any] = {"origin_features": 0.0, "origin_labels": 0.0, "weight_nonfinite": 0.0, "skipped": 0.0,
                         "loss": 1.0}


@pytest.mark.parametrize(
    ("row", "loss_recorded", "layer", "source", "named_layer", "detail"),
    [
        ({"origin_features": 3.0}, True, "dense", "features", None, "3 non-finite values in this batch's input"),
        ({"origin_labels": 2.0}, True, "dense", "labels", None, "2 non-finite values in this batch's labels"),
        ({"weight_nonfinite": 7.0}, True, "dense", "unknown", None, "already wrote 7 non-finite weights"),
        # the update was skipped (guard_nonfinite), so the weights are the step's own: replay them
        ({"weight_nonfinite": 7.0, "skipped": 1.0}, True, "dense_1", "layer", "dense_1", "dense_1 is the first"),
        ({}, True, "dense", "layer", "dense", "replaying the batch, dense is the first layer"),
        ({"loss": math.nan}, True, None, "loss", None, "the forward pass is finite but the loss is not"),
        ({"loss": math.nan}, False, None, "unknown", None, "the backward pass overflowed"),  # no loss known
        ({}, True, None, "unknown", None, "the backward pass overflowed"),
    ],
    ids=["features", "labels", "poisoned", "skipped-replayed", "layer", "loss", "loss-unknown", "backward"],
)
def test_the_first_evidence_names_the_cause(
    row: dict[str, Any], loss_recorded: bool, layer: str | None, source: str, named_layer: str | None, detail: str
) -> None:
    got = explain_nonfinite({**CLEAN, **row}, loss_recorded, lambda: layer)
    assert got[:2] == (source, named_layer)
    assert detail in got[2]


def test_the_batch_is_replayed_only_when_inputs_are_clean_and_weights_trustworthy() -> None:
    replays: list[int] = []

    def replay() -> str | None:
        replays.append(1)
        return None

    for row in ({"origin_features": 1.0}, {"origin_labels": 1.0}, {"weight_nonfinite": 1.0}):
        explain_nonfinite({**CLEAN, **row}, True, replay)
    assert replays == []
    explain_nonfinite(CLEAN, True, replay)
    assert replays == [1]
