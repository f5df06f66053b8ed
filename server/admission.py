"""What the door checks about a step record that the wire schema alone cannot: its vectors fit the run.

``protocol.StepRecord`` already refuses wrong types, non-finite numbers where the field allows none and
numbers out of bounds. Whether ``update_ratio`` has one entry per variable depends on the run, so it is
checked here, for every field ``gradwatch.stepfields.STEP_FIELDS`` declares with a vector shape, against
``RunRow.width`` (the one place that says how wide a run's vectors are). A record that fails is refused
before anything of its frame is stored or published.
"""

from __future__ import annotations

from gradwatch.protocol import BN_FIELDS, StepRecord
from gradwatch.stepfields import STEP_FIELDS

from .store import RunRow

_VARIABLE = tuple(f.name for f in STEP_FIELDS if f.shape == "variable")
_BN_LAYER = tuple(f.name for f in STEP_FIELDS if f.shape == "bn_layer")


def misfit(run: RunRow, rec: StepRecord) -> str | None:
    """Why ``rec`` does not fit ``run``'s layout (a sentence naming the field, its size and the expected one), or
    ``None``. A nullable vector may be ``None`` (not measured); a BN field may be empty (a step not sampled)."""
    want = run.width("variable", rec.step)
    for name in _VARIABLE:
        value = getattr(rec, name)
        if value is not None and len(value) != want:
            return (
                f"step {rec.step}: {name} has {len(value)} entries, expected {want} "
                "(one per variable watched at that step)"
            )
    layers = run.width("bn_layer")
    for name in _BN_LAYER:
        rows = getattr(rec, name)
        if rows and (len(rows) != layers or any(len(row) != len(BN_FIELDS) for row in rows)):
            return f"step {rec.step}: {name} must be {layers} rows of {len(BN_FIELDS)} values (or empty)"
    return None
