"""``explain_nonfinite``: which cause a non-finite step is put down to, in order of evidence."""

from __future__ import annotations

import math
from typing import Any

import pytest
from gradwatch.trainer_hooks.origin import Replay, explain_nonfinite

CLEAN: dict[str, Any] = {
    "origin_features": 0.0,
    "origin_labels": 0.0,
    "weight_nonfinite": 0.0,
    "skipped": 0.0,
    "loss": 1.0,
}


@pytest.mark.parametrize(
    ("row", "loss_recorded", "layer", "source", "named_layer", "detail"),
    [
        ({"origin_features": 3.0}, True, "dense", "features", None, "3 non-finite values in this batch's input"),
        ({"origin_labels": 2.0}, True, "dense", "labels", None, "2 non-finite values in this batch's labels"),
        ({"weight_nonfinite": 7.0}, True, "dense", "unknown", None, "already wrote 7 non-finite weights"),
        # the update was skipped (guard_nonfinite), so the weights are the step's own: replay them
        ({"weight_nonfinite": 7.0, "skipped": 1.0}, True, "dense_1", "layer", "dense_1", "dense_1 is the first"),
        ({}, True, "dense", "layer", "dense", "replaying the batch, dense is the first layer"),
        ({"loss": math.nan}, True, None, "loss", None, "replayed: the forward pass is finite but the loss is not"),
        ({"loss": math.nan}, False, None, "unknown", None, "the backward pass overflowed"),  # no loss known
        ({}, True, None, "unknown", None, "replayed: inputs, labels and every layer's output are finite"),
    ],
    ids=["features", "labels", "poisoned", "skipped-replayed", "layer", "loss", "loss-unknown", "backward"],
)
def test_the_first_evidence_names_the_cause(
    row: dict[str, Any], loss_recorded: bool, layer: str | None, source: str, named_layer: str | None, detail: str
) -> None:
    def replay(current_ok: bool) -> Replay:
        return Replay(replayed=True, layer=layer) if current_ok else Replay()

    got = explain_nonfinite({**CLEAN, **row}, loss_recorded, replay)
    assert got[:2] == (source, named_layer)
    assert detail in got[2]


def test_the_batch_is_replayed_only_when_inputs_are_clean() -> None:
    replays: list[bool] = []

    def replay(current_ok: bool) -> Replay:
        replays.append(current_ok)
        return Replay(replayed=True)

    for row in ({"origin_features": 1.0}, {"origin_labels": 1.0}):
        explain_nonfinite({**CLEAN, **row}, True, replay)
    assert replays == []
    explain_nonfinite({**CLEAN, "weight_nonfinite": 1.0}, True, replay)
    explain_nonfinite(CLEAN, True, replay)
    assert replays == [False, True]  # poisoned weights may not stand in for the step's own


def test_a_batch_not_replayed_is_never_called_all_finite() -> None:
    got = explain_nonfinite(CLEAN, True, lambda ok: Replay(why_not="a later step's batch replaced it"))
    assert got[0] == "unknown" and "not replayed: a later step's batch replaced it" in got[2]
    assert "finite;" not in got[2].split("not replayed")[1] and "overflowed" not in got[2]


def test_a_loop_given_no_inputs_says_so() -> None:
    got = explain_nonfinite(CLEAN, True, lambda ok: Replay(replayed=True), inputs_given=False)
    assert got[0] == "unknown" and "no inputs=" in got[2] and "inputs=(x, y)" in got[2]
    assert "are finite" not in got[2]
